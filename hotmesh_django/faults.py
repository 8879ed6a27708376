"""Fault points: kill this process, or its database session, at a chosen moment, for crash tests.

The engine calls `point("name")` right where a crash would be interesting: after a
claim commits, before and after an ack commits, after a turn commits, and just
before a claim, an ack or a turn's write is sent. They cost a global lookup when
off. Turn them on for one process with the environment variable `HOTMESH_FAULTS`,
read once at import:

    HOTMESH_FAULTS="ack_commit:3"            # os._exit(137) the 3rd time ack_commit is hit
    HOTMESH_FAULTS="*:5"                     # ... at the 5th point reached, whatever its name
    HOTMESH_FAULTS="claim:2,turn_commit:1"   # whichever comes first
    HOTMESH_FAULTS="ack_send:3:disconnect"   # end this thread's database session instead

The action after the count is `exit` (the default) or `disconnect`.

`exit` calls `os._exit`, which skips every `finally`, `atexit` and rollback, as
SIGKILL would: the database sees the connection drop, and only what had committed
survives.

`disconnect` terminates the calling thread's database session with
`pg_terminate_backend` and waits until it is gone (see `disconnect()`): the process
lives on, its open transaction is rolled back, and the engine's next statement
fails on the dead session with the server's "terminating connection" error, as
after a server-side kill. Each planned fault fires
once (at the Nth hit), so a disconnected worker is expected to reconnect and go on.

Names used by the engine, at commit boundaries:
- `claim`: a claim statement returned messages (it committed on its own);
- `turn_commit`: a workflow turn committed;
- `step_start`: a step is claimed and about to run its function;
- `step_done`: the function returned, its result is not acknowledged yet (for an
  `atomic=True` activity this is inside the open transaction with its writes);
- `ack_commit`: a step's success ack (and the next turn it ran) committed.

and just before a statement, to interrupt it (`disconnect` is the action of interest):
- `claim_send`: a claim statement is about to be sent (also when it finds nothing);
- `ack_send`: a success ack is about to be sent (a step's, inside the transaction
  that also runs the next turn; an activity job's, alone or a batch of them);
- `turn_write`: a turn's journal, steps and messages are about to be written, inside
  the turn's open transaction.

The `*` wildcard and `record()` see only the commit boundaries: the statement points
fire on every idle poll too, so counting them would make a run's points depend on
timing. Name them explicitly.

`record()` counts the points reached in this process instead, to learn how many
boundaries a run has (the crash-consistency checker in `hotmesh_django.testing`).
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

ENV = "HOTMESH_FAULTS"
ANY = "*"
EXIT_CODE = 137  # what a shell reports for SIGKILL
EXIT = "exit"
DISCONNECT = "disconnect"
ACTIONS = (EXIT, DISCONNECT)
# Points just before a statement: fired by name only (see the module docstring).
STATEMENT_POINTS = frozenset({"claim_send", "ack_send", "turn_write"})

_lock = threading.Lock()


class Fault(NamedTuple):
    hits: int
    action: str = EXIT


def parse(spec: str) -> dict[str, Fault]:
    """Parse "name:N[:action][,...]" into {name: Fault}; raise ValueError when malformed."""
    plan: dict[str, Fault] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        fields = [field.strip() for field in part.split(":")]
        if len(fields) not in (2, 3) or not fields[0]:
            raise ValueError(
                f"{ENV}: {part!r} is not name:N or name:N:action,"
                " e.g. ack_commit:3, *:5 or ack_send:3:disconnect."
            )
        name, count = fields[0], fields[1]
        action = fields[2] if len(fields) == 3 else EXIT
        try:
            number = int(count)
        except ValueError:
            raise ValueError(f"{ENV}: {count!r} in {part!r} is not an integer.") from None
        if number < 1:
            raise ValueError(f"{ENV}: the count in {part!r} must be at least 1.")
        if action not in ACTIONS:
            raise ValueError(
                f"{ENV}: the action {action!r} in {part!r} is not one of {', '.join(ACTIONS)}."
            )
        if name in plan:
            raise ValueError(f"{ENV}: {name!r} is planned twice in {spec!r}.")
        plan[name] = Fault(number, action)
    return plan


_plan: dict[str, Fault] = parse(os.environ.get(ENV, ""))
_counts: dict[str, int] = {}
_trace: list[str] | None = None
# The one flag point() reads: off unless a plan or a recording is active.
_enabled: bool = bool(_plan)


def point(name: str, hit: object = True) -> None:
    """Mark a crash point; exit the process (or end this thread's database session)
    here if HOTMESH_FAULTS says so.

    A falsy `hit` means the point was not really reached (a claim that found
    nothing), so it is neither counted nor fired.
    """
    if not _enabled or not hit:
        return
    _reached(name)


def _reached(name: str) -> None:
    keys = (name,) if name in STATEMENT_POINTS else (name, ANY)
    fired: Fault | None = None
    with _lock:
        if _trace is not None and ANY in keys:
            _trace.append(name)
        for key in keys:
            _counts[key] = _counts.get(key, 0) + 1
        for key in keys:
            wanted = _plan.get(key)
            if wanted is not None and _counts[key] == wanted.hits:
                fired = wanted
                sys.stderr.write(
                    f"hotmesh fault: {wanted.action} at point {name} "
                    f"(#{_counts.get(ANY, 0)} overall, #{_counts[name]} of its name)"
                    f" in thread {threading.current_thread().name}\n"
                )
                sys.stderr.flush()
                if wanted.action == EXIT:
                    os._exit(EXIT_CODE)
                break
    # Outside the lock: the other threads' points need not wait for the database.
    if fired is not None and fired.action == DISCONNECT:
        disconnect()


def disconnect() -> None:
    """End the calling thread's database session from the server side, as an
    operator's pg_terminate_backend would, and return once it is gone.

    The kill is sent from a short-lived side connection, not from the session
    itself: a session that ends itself reads the server's "terminating connection"
    error as the reply to that very statement, and the engine's next statement would
    then fail on a half-known dead socket (no SQLSTATE, not marked closed), a state no
    real connection loss leaves. From the side, the session's next statement reads
    the FATAL error (57P01) itself, exactly as when it is killed mid-flight. Django is
    not told: it still holds the dead connection.
    """
    from django.db import connection  # here: this module is imported before settings

    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    side = connection.get_new_connection(connection.get_connection_params())
    try:
        side.autocommit = True
        # The timeout (ms) makes the call wait until the backend has exited.
        row = side.execute("SELECT pg_terminate_backend(%s, 5000)", [pid]).fetchone()
    finally:
        side.close()
    gone = bool(row and row[0])
    sys.stderr.write(f"hotmesh fault: session {pid} {'terminated' if gone else 'NOT terminated'}\n")
    sys.stderr.flush()


_EXIT_LINE = re.compile(rf"^hotmesh fault: {EXIT} at point (\S+) ", re.MULTILINE)


def exit_point(log: str) -> str | None:
    """The point a process exited at, read from the line point() wrote to its stderr."""
    match = _EXIT_LINE.search(log)
    return match[1] if match else None


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
