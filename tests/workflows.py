"""Workflows the test suite runs."""

from __future__ import annotations

import threading
import time
from typing import Any

import hotmesh_django as hm
from tests import activities as a

# Flipped by tests to change a workflow's code between turns (in-process workers).
FLAGS: dict[str, Any] = {"changed": False, "patched": False}


@hm.workflow(name="t.three_steps")
def three_steps(n: int) -> int:
    x = a.add(n, 1)
    y = a.add(x, 1)
    return a.add(y, 1)


@hm.workflow(name="t.sleeper")
def sleeper(seconds: float) -> str:
    before = hm.now()
    hm.sleep(seconds)
    after = hm.now()
    return f"{(after - before).total_seconds():.3f}"


@hm.workflow(name="t.waiter")
def waiter(name: str, timeout: float | None = None) -> Any:
    try:
        return hm.wait_for_signal(name, timeout=timeout)
    except hm.SignalTimeout:
        return "timed out"


@hm.workflow(name="t.two_signals")
def two_signals() -> list[Any]:
    return [hm.wait_for_signal("go"), hm.wait_for_signal("go")]


@hm.workflow(name="t.child")
def child(n: int) -> int:
    return a.add(n, 100)


@hm.workflow(name="t.parent")
def parent(n: int) -> list[int]:
    first = child(n)
    handles = [child.start(i) for i in range(3)]
    return [first, *hm.gather(*handles)]


@hm.workflow(name="t.fanout")
def fanout(n: int) -> int:
    return sum(hm.gather(*[a.add.start(i, 0) for i in range(n)]))


@hm.workflow(name="t.child_fanout")
def child_fanout(n: int) -> int:
    return sum(hm.gather(*[child.start(i) for i in range(n)]))


@hm.workflow(name="t.compensates")
def compensates() -> str:
    try:
        a.always_fail("charge declined")
    except hm.ActivityFailed as exc:
        return f"compensated after {exc.type}: {exc.message}"
    return "not reached"


@hm.workflow(name="t.step_fails")
def step_fails() -> None:
    a.always_fail("uncaught")


@hm.workflow(name="t.raises")
def raises() -> None:
    raise RuntimeError("workflow bug")


@hm.workflow(name="t.deterministic")
def deterministic() -> dict[str, Any]:
    first = {"now": hm.now(), "uuid": hm.uuid4(), "random": hm.random()}
    hm.wait_for_signal("continue")
    again = {"now": hm.now(), "uuid": hm.uuid4(), "random": hm.random()}
    return {"first": first, "again": again}


@hm.workflow(name="t.changes")
def changes() -> str:
    a.add(1, 1)
    if FLAGS["changed"]:
        a.echo("new path")  # step 2 used to be a signal wait
    else:
        hm.wait_for_signal("continue")
    return "done"


@hm.workflow(name="t.versioned")
def versioned() -> str:
    a.add(1, 1)
    hm.wait_for_signal("continue")
    if hm.patched("use-echo"):
        return str(a.echo("new"))
    return str(a.add(2, 2))


@hm.workflow(name="t.versioned_after")
def versioned_after() -> str:
    """The same workflow after its deploy: the patch wraps the changed call."""
    if FLAGS["patched"] and hm.patched("extra-step"):
        a.echo("extra")
    a.add(1, 1)
    return "ok"


@hm.workflow(name="t.atomic_steps")
def atomic_steps(key: str, n: int) -> int:
    for i in range(n):
        a.write_effect(f"{key}:{i}")
    return n


@hm.workflow(name="t.slow_steps")
def slow_steps(key: str, n: int, seconds: float) -> int:
    total = 0
    for i in range(n):
        total += a.slow(seconds, f"{key}:{i}")
    return total


@hm.workflow(name="t.slow_steps_on")
def slow_steps_on(key: str, n: int, seconds: float, queue: str) -> int:
    """As slow_steps, with the steps on `queue` (the turns stay on "default")."""
    total = 0
    for i in range(n):
        total += a.slow.using(queue=queue)(seconds, f"{key}:{i}")
    return total


@hm.workflow(name="t.timeout", timeout=0.5)
def times_out() -> None:
    hm.wait_for_signal("never")


@hm.workflow(name="t.searchable")
def searchable(customer: str) -> str:
    hm.set_search(customer=customer, tier="gold")
    return customer


@hm.workflow(name="t.returns_bad")
def returns_bad() -> object:
    return {1, 2}


@hm.workflow(name="t.chaos")
def chaos(key: str) -> str:
    for i in range(3):
        a.slow(0.05, f"{key}:{i}")
    a.write_effect(f"{key}:fx")
    return key


@hm.workflow(name="t.stateful")
def stateful(total: int) -> int:
    done = 0
    hm.set_state(progress=0, total=total)
    while done < total:
        step = hm.wait_for_signal("add")
        done += int(step)
        hm.set_state(progress=done)
    return done


@hm.workflow(name="t.poller")
def poller(round_no: int, total: int) -> int:
    a.add(round_no, 0)
    if round_no < total:
        hm.continue_as_new(round_no + 1, total)
        raise AssertionError("code after continue_as_new ran")  # pragma: no cover
    return round_no


@hm.workflow(name="t.sturdy_steps")
def sturdy_steps(key: str, n: int) -> int:
    total = 0
    for i in range(n):
        a.sturdy_effect(f"{key}:{i}")
        total = a.sturdy_add(total, 1)
    return total


@hm.workflow(name="t.child_by_id")
def child_by_id(workflow_id: str) -> Any:
    """Wait for a child under a workflow_id the caller chose (which may be taken)."""
    return waiter.using(workflow_id=workflow_id)("go")


@hm.workflow(name="t.gather_child_by_id")
def gather_child_by_id(workflow_id: str) -> list[int]:
    return hm.gather(child.using(workflow_id=workflow_id).start(1))


@hm.workflow(name="t.delayed_calls")
def delayed_calls(seconds: float) -> list[float]:
    """How long (by the workflow's clock) a delayed step and a delayed child took."""
    start = hm.now()
    a.add.using(delay=seconds)(1, 1)
    middle = hm.now()
    child.using(delay=seconds)(1)
    end = hm.now()
    return [(middle - start).total_seconds(), (end - middle).total_seconds()]


@hm.workflow(name="t.catches_unstorable")
def catches_unstorable(kind: str) -> str:
    try:
        a.unstorable_error(kind)
    except hm.ActivityFailed as exc:
        return f"{exc.type}: {exc.message}"
    return "not reached"


@hm.workflow(name="t.raises_unstorable")
def raises_unstorable() -> None:
    raise ValueError("wf\x00nul")


@hm.workflow(name="t.patched_loop")
def patched_loop(n: int) -> list[str]:
    """A patch inside a loop; the code changes (FLAGS) while the run waits."""
    out = []
    for i in range(n):
        if FLAGS["patched"] and hm.patched("loop"):
            out.append(a.echo(f"new{i}"))
        else:
            out.append(a.echo(f"old{i}"))
        if i == 0:
            hm.wait_for_signal("next")
    return out


@hm.workflow(name="t.child_times_out")
def child_times_out() -> None:
    """Run `times_out` (timeout=0.5) as a child."""
    times_out()


@hm.workflow(name="t.nests")
def nests(child_id: str, then: str) -> Any:
    """Run itself as a child under `child_id`, which runs itself under `then`."""
    return nests.using(workflow_id=child_id)(then, then)


@hm.workflow(name="t.leaves_child")
def leaves_child(workflow_id: str) -> str:
    """Start a child and end without waiting for it."""
    waiter.using(workflow_id=workflow_id).start("never")
    return "done"


@hm.workflow(name="t.waits_on_child", timeout=0.8)
def waits_on_child(workflow_id: str) -> Any:
    """Wait for a child that waits for a signal, past this workflow's timeout."""
    return waiter.using(workflow_id=workflow_id)("never")


@hm.workflow(name="t.continues_then_waits", timeout=0.8)
def continues_then_waits(round_no: int) -> Any:
    if round_no == 0:
        hm.continue_as_new(1)
    return hm.wait_for_signal("never")


@hm.workflow(name="t.leaves_child_then_step")
def leaves_child_then_step(workflow_id: str) -> int:
    """Start a child, run a step, end without waiting for the child."""
    waiter.using(workflow_id=workflow_id).start("never")
    return a.add(1, 2)


# Set by the workflows below once their turn has begun; they then hold the turn's
# transaction (and the job row's lock) open a while (in-process workers only). Their
# timeout sends every turn down the usual, locking path (engine/sticky.py).
TURN_BEGUN = threading.Event()


@hm.workflow(name="t.slow_turn", timeout=60)
def slow_turn(n: int) -> None:
    """Start `n` children in a turn that takes a while to commit."""
    for _ in range(n):
        waiter.start("never")
    TURN_BEGUN.set()
    time.sleep(0.8)
    hm.sleep(30)


@hm.workflow(name="t.slow_continue", timeout=60)
def slow_continue(round_no: int) -> None:
    """Continue as new in a turn that takes a while to commit, then wait."""
    if round_no == 0:
        TURN_BEGUN.set()
        time.sleep(0.8)
        hm.continue_as_new(1)
    hm.sleep(30)


@hm.workflow(name="t.ends_on_signal")
def ends_on_signal(child_id: str) -> str:
    """Start a slow_continue child, end on a signal without waiting for it."""
    slow_continue.using(workflow_id=child_id).start(0)
    hm.wait_for_signal("end")
    return "ended"


@hm.workflow(name="t.signals_from_code")
def signals_from_code(workflow_id: str) -> str:
    """Signal another job twice, with replays in between."""
    hm.signal(workflow_id, "x" * 255)  # the longest name still fits its step's name
    hm.signal(workflow_id, "go", 1)
    hm.sleep(0.05)
    hm.get_handle(workflow_id).signal("go", 2)
    hm.sleep(0.05)
    try:
        hm.signal("no-such-job", "go")
    except hm.JobNotFound:
        return "sent"
    return "no error"


@hm.workflow(name="t.spin")
def spin(round_no: int) -> None:
    """Continue as new for ever, as fast as it can."""
    hm.continue_as_new(round_no + 1)


@hm.workflow(name="t.spin_parent")
def spin_parent(n: int) -> int:
    """Start `n` spinning children, end on a signal without waiting for them."""
    for _ in range(n):
        spin.start(0)
    hm.wait_for_signal("end")
    return n


@hm.workflow(name="t.one_slow_atomic")
def one_slow_atomic(seconds: float) -> float:
    return a.slow_atomic(seconds)


# Every (now, uuid4, random) a run of t.draws saw, in this process.
DRAWS_SEEN: list[tuple[str, str, float]] = []


@hm.workflow(name="t.draws")
def draws() -> list[Any]:
    seen = (hm.now().isoformat(), str(hm.uuid4()), hm.random())
    DRAWS_SEEN.append(seen)
    a.add(1, 1)
    hm.sleep(0.05)  # a timer: a turn the sticky path leaves to the usual one
    a.add(2, 2)
    return list(seen)
