"""The benchmark's definitions: a no-op activity, a 3-step workflow, timer probes.

Workers load this module with `--import bench.defs`. The names are fixed so the
journal stays readable whatever the module is called.
"""

from __future__ import annotations

import os
import time

import hotmesh_django as hm

MARK_FILE_ENV = "BENCH_MARK_FILE"


def write_mark(key: str) -> None:
    """Append "<key> <unix time>" to $BENCH_MARK_FILE (the moment a body starts)."""
    now = time.time()
    path = os.environ.get(MARK_FILE_ENV)
    if path:
        with open(path, "a", encoding="ascii") as f:
            f.write(f"{key} {now:.6f}\n")


@hm.activity(name="bench.noop")
def noop() -> None:
    """Do nothing: W1's job and every W2 step."""


@hm.activity(name="bench.step")
def step(i: int) -> int:
    """Return `i`: one durable no-op step of a W2 workflow."""
    return i


@hm.activity(name="bench.mark")
def mark(key: str) -> None:
    """Record when this body started (W3 pickup latency, timer lateness)."""
    write_mark(key)


@hm.workflow(name="bench.three_steps")
def three_steps() -> int:
    """W2: three sequential no-op steps."""
    return step(1) + step(1) + step(1)


@hm.workflow(name="bench.sleeper")
def sleeper(key: str, seconds: float) -> None:
    """Timers: sleep durably, then record when the next step starts."""
    hm.sleep(seconds)
    mark(key)
