"""Workflows and activities for the test-kit, replay and bad-input tests.

Worker subprocesses started by the crash-consistency checker import this module.
"""

from __future__ import annotations

import threading
from typing import Any

import hotmesh_django as hm
from tests import activities as a

# Flipped by tests to change a workflow's code between its start and a replay check.
FLAGS: dict[str, Any] = {"reordered": False}

# Set at teardown to free a thread still inside `never_returns`.
RELEASE = threading.Event()


@hm.workflow(name="kit.napper")
def napper(seconds: float) -> str:
    """Sleep durably twice around a step."""
    hm.sleep(seconds)
    value = a.add(1, 2)
    hm.sleep(seconds)
    return f"slept twice, got {value}"


@hm.workflow(name="kit.patient")
def patient(timeout: float) -> str:
    try:
        return str(hm.wait_for_signal("go", timeout=timeout))
    except hm.SignalTimeout:
        return "timed out"


@hm.workflow(name="kit.keyed_effects")
def keyed_effects(n: int) -> int:
    """Write n atomic effects keyed by a per-job recorded UUID."""
    key = str(hm.uuid4())
    for i in range(n):
        a.write_effect(f"{key}:{i}")
    return n


@hm.workflow(name="kit.mixed")
def mixed(n: int) -> dict[str, Any]:
    """Steps, a fan-out, a recorded value and a short sleep."""
    first = a.add(n, 1)
    fanned = hm.gather(*[a.add.start(first, i) for i in range(3)])
    hm.sleep(0.05)
    return {"first": first, "fanned": fanned, "tag": len(str(hm.uuid4()))}


@hm.workflow(name="kit.fails")
def fails() -> None:
    a.add(1, 1)
    raise ValueError("the workflow's own bug")


@hm.workflow(name="kit.reorders")
def reorders() -> str:
    a.add(1, 1)
    if FLAGS["reordered"]:
        a.echo("moved up")
        hm.wait_for_signal("continue")
    else:
        hm.wait_for_signal("continue")
        a.echo("moved up")
    return "done"


@hm.workflow(name="kit.long_child")
def long_child() -> None:
    """Wait, without a timeout, for a signal no one sends."""
    hm.wait_for_signal("never")


@hm.workflow(name="kit.long_parent")
def long_parent() -> None:
    long_child()


@hm.workflow(name="kit.oversleeps", timeout=0.5)
def oversleeps() -> None:
    """Sleep past the workflow's own timeout."""
    hm.sleep(60)


@hm.activity(name="kit.interrupts", retry=hm.RetryPolicy(max_attempts=1))
def interrupts() -> None:
    raise KeyboardInterrupt


@hm.activity(name="kit.exits", retry=hm.RetryPolicy(max_attempts=1))
def exits() -> None:
    import sys

    sys.exit("asked to exit")


@hm.activity(name="kit.never_returns", retry=hm.RetryPolicy(max_attempts=1), timeout=0.5)
def never_returns() -> None:
    RELEASE.wait(60)


@hm.workflow(name="kit.workflow_interrupts")
def workflow_interrupts() -> None:
    a.add(1, 1)
    raise KeyboardInterrupt


@hm.workflow(name="kit.workflow_exits")
def workflow_exits() -> None:
    import sys

    sys.exit(4)


@hm.workflow(name="kit.calls")
def calls(activity_name: str) -> str:
    """Call a bad activity, then prove the worker still works with a good one."""
    try:
        {"interrupts": interrupts, "exits": exits, "never_returns": never_returns}[activity_name]()
    except hm.ActivityFailed as exc:
        return f"{exc.type}: {exc.message}"
    return "no error"


@hm.workflow(name="kit.unstable")
def unstable() -> str:
    """Wrong on purpose: a bare uuid4() differs on every replay and every run."""
    import uuid

    return str(a.echo(str(uuid.uuid4())))
