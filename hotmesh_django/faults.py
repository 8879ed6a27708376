"""Fault points: kill this process at a chosen transaction boundary, for crash tests.

The engine calls `point("name")` right where a crash would be interesting: after a
claim commits, before and after an ack commits, after a turn commits. They cost a
global lookup when off. Turn them on for one process with the environment variable
`HOTMESH_FAULTS`, read once at import:

    HOTMESH_FAULTS="ack_commit:3"          # os._exit(137) the 3rd time ack_commit is hit
    HOTMESH_FAULTS="*:5"                   # ... at the 5th point reached, whatever its name
    HOTMESH_FAULTS="claim:2,turn_commit:1" # whichever comes first

`os._exit` skips every `finally`, `atexit` and rollback, as SIGKILL would: the
database sees the connection drop, and only what had committed survives.

Names used by the engine:
- `claim`: a claim statement returned messages (it committed on its own);
- `turn_commit`: a workflow turn committed;
- `step_start`: a step is claimed and about to run its function;
- `step_done`: the function returned, its result is not acknowledged yet (for an
  `atomic=True` activity this is inside the open transaction with its writes);
- `ack_commit`: a step's success ack (and the next turn it ran) committed.

`record()` counts the points reached in this process instead, to learn how many
boundaries a run has (the crash-consistency checker in `hotmesh_django.testing`).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

ENV = "HOTMESH_FAULTS"
ANY = "*"
EXIT_CODE = 137  # what a shell reports for SIGKILL

_lock = threading.Lock()


def parse(spec: str) -> dict[str, int]:
    """Parse "name:N[,name:N...]" into {name: N}; raise ValueError when malformed."""
    plan: dict[str, int] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, count = part.rpartition(":")
        if not sep or not name.strip():
            raise ValueError(f"{ENV}: {part!r} is not name:N, e.g. ack_commit:3 or *:5.")
        try:
            number = int(count)
        except ValueError:
            raise ValueError(f"{ENV}: {count!r} in {part!r} is not an integer.") from None
        if number < 1:
            raise ValueError(f"{ENV}: the count in {part!r} must be at least 1.")
        plan[name.strip()] = number
    return plan


_plan: dict[str, int] = parse(os.environ.get(ENV, ""))
_counts: dict[str, int] = {}
_trace: list[str] | None = None
# The one flag point() reads: off unless a plan or a recording is active.
_enabled: bool = bool(_plan)


def point(name: str, hit: object = True) -> None:
    """Mark a crash point; exit the process here if HOTMESH_FAULTS says so.

    A falsy `hit` means the point was not really reached (a claim that found
    nothing), so it is neither counted nor fired.
    """
    if not _enabled or not hit:
        return
    _reached(name)


def _reached(name: str) -> None:
    with _lock:
        if _trace is not None:
            _trace.append(name)
        _counts[name] = _counts.get(name, 0) + 1
        _counts[ANY] = _counts.get(ANY, 0) + 1
        for key in (name, ANY):
            wanted = _plan.get(key)
            if wanted is not None and _counts[key] == wanted:
                sys.stderr.write(
                    f"hotmesh fault: exiting at point {name} "
                    f"(#{_counts[ANY]} overall, #{_counts[name]} of its name)\n"
                )
                sys.stderr.flush()
                os._exit(EXIT_CODE)


@contextmanager
def record() -> Iterator[list[str]]:
    """Collect the names of the points this process reaches while active, in order.

    Used in the test process, where no plan is set; nothing exits.
    """
    global _trace, _enabled
    names: list[str] = []
    with _lock:
        previous = _trace
        _trace = names
        _enabled = True
    try:
        yield names
    finally:
        with _lock:
            _trace = previous
            _enabled = bool(_plan) or _trace is not None
