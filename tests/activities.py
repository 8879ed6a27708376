"""Activities the test suite runs, in-process and in worker subprocesses."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from django.db.models import F

import hotmesh_django as hm
from hotmesh_django import RetryPolicy, activity

FAST = RetryPolicy(max_attempts=3, initial_interval=0.05, backoff=2.0, max_interval=0.2)


def bump(key: str) -> int:
    """Add one to the counter `key` and return the new value (process-safe)."""
    from tests.models import Counter

    Counter.objects.get_or_create(key=key)
    Counter.objects.filter(key=key).update(value=F("value") + 1)
    return Counter.objects.get(key=key).value


@activity(name="t.noop")
def noop() -> None:
    return None


@activity(name="t.add", retry=FAST)
def add(a: int, b: int) -> int:
    return a + b


@activity(name="t.echo", retry=FAST)
def echo(value: Any) -> Any:
    return value


@activity(name="t.fail_times", retry=RetryPolicy(max_attempts=4, initial_interval=0.05))
def fail_times(key: str, times: int) -> int:
    """Fail the first `times` calls for `key`, then return the call count."""
    count = bump(key)
    if count <= times:
        raise ValueError(f"planned failure {count} of {times}")
    return count


@activity(name="t.always_fail", retry=FAST)
def always_fail(message: str) -> None:
    bump(f"always_fail:{message}")
    raise ValueError(message)


@activity(name="t.refuse", retry=FAST)
def refuse() -> None:
    bump("refuse")
    raise hm.NonRetryableError("no point in retrying")


@activity(name="t.lookup_fails", retry=RetryPolicy(max_attempts=5, non_retryable=(KeyError,)))
def lookup_fails() -> None:
    bump("lookup_fails")
    raise KeyError("missing")


@activity(name="t.bad_result", retry=FAST)
def bad_result() -> object:
    return object()


@activity(name="t.exits", retry=RetryPolicy(max_attempts=2, initial_interval=0.05))
def exits() -> None:
    bump("exits")
    raise SystemExit(3)


@activity(name="t.sleepy", retry=RetryPolicy(max_attempts=2, initial_interval=0.05), timeout=0.5)
def sleepy(seconds: float, key: str) -> str:
    """Sleep longer than the timeout on the first call only."""
    count = bump(key)
    if count == 1:
        time.sleep(seconds)
    return f"call {count}"


@activity(name="t.slow", retry=RetryPolicy(max_attempts=5, initial_interval=0.05))
def slow(seconds: float, key: str) -> int:
    """Count the call, mark that it started, then sleep (a window for SIGKILL)."""
    count = bump(key)
    marker = os.environ.get("HOTMESH_TEST_MARKER_DIR")
    if marker:
        Path(marker, f"{key}.{os.getpid()}.{count}").touch()
    time.sleep(seconds)
    return count


@activity(name="t.write_effect", atomic=True, retry=FAST)
def write_effect(key: str) -> str:
    from tests.models import Effect

    Effect.objects.create(key=key)
    return key


# Attempts of slow_effect by key, in this process: a count kept in the database would
# be rolled back with the attempt (the test runs its worker in-process).
_SLOW_EFFECT_CALLS: dict[str, int] = {}


@activity(name="t.slow_effect", atomic=True, timeout=0.3, retry=FAST)
def slow_effect(key: str, seconds: float) -> str:
    """Write, then overrun the timeout on the first attempt only."""
    from tests.models import Effect

    Effect.objects.create(key=key)
    _SLOW_EFFECT_CALLS[key] = _SLOW_EFFECT_CALLS.get(key, 0) + 1
    if _SLOW_EFFECT_CALLS[key] == 1:
        time.sleep(seconds)
    return key


@activity(name="t.effect_then_fail", atomic=True, retry=FAST)
def effect_then_fail(key: str) -> None:
    from tests.models import Effect

    Effect.objects.create(key=key)
    raise ValueError("after the write")


@activity(name="t.tracked", queue="limited")
def tracked(key: str, seconds: float) -> None:
    """Record when this run started and ended, to check concurrency limits."""
    from tests.models import Interval

    started = time.time()
    time.sleep(seconds)
    Interval.objects.create(key=key, started=started, ended=time.time())


@activity(name="t.rated", queue="rated")
def rated(key: str) -> None:
    from tests.models import Interval

    now = time.time()
    Interval.objects.create(key=key, started=now, ended=now)


@activity(name="t.tenant_work", queue="tenants")
def tenant_work(key: str, seconds: float) -> None:
    """Record when this run started and ended, keyed by tenant."""
    from tests.models import Interval

    started = time.time()
    time.sleep(seconds)
    Interval.objects.create(key=key, started=started, ended=time.time())


# For chaos tests: faults there are the infrastructure's, so give the retry budget
# room; what is under test is that nothing is lost or done twice.
STURDY = RetryPolicy(max_attempts=50, initial_interval=0.02, backoff=1.5, max_interval=0.2)


@activity(name="t.sturdy_effect", atomic=True, retry=STURDY)
def sturdy_effect(key: str) -> str:
    from tests.models import Effect

    Effect.objects.create(key=key)
    return key


@activity(name="t.sturdy_add", retry=STURDY)
def sturdy_add(a: int, b: int) -> int:
    return a + b


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


@activity(name="t.unstorable_error", retry=FAST)
def unstorable_error(kind: str) -> None:
    """Raise an exception whose text Postgres cannot store as it is."""
    if kind == "nul":
        raise ValueError("bad\x00byte")
    if kind == "surrogate":
        raise ValueError("bad\ud800half")
    raise _Unprintable()


@activity(name="t.slow_first_time", retry=RetryPolicy(max_attempts=1))
def slow_first_time(key: str) -> int:
    """One attempt only; the first call hangs (until its worker is stopped)."""
    count = bump(key)
    if count == 1:
        time.sleep(60)
    return count


@activity(name="t.own_session_killed", retry=FAST)
def own_session_killed(key: str) -> None:
    """Open a session of its own and have the server end it (57P01): the activity's
    failure, not its worker's."""
    from django.db import connections

    bump(key)
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    finally:
        other.close()


@activity(name="t.slow_atomic", atomic=True, retry=FAST)
def slow_atomic(seconds: float) -> float:
    """An atomic step that writes, then takes a while: its ack shares the transaction
    its first write began."""
    bump("slow_atomic")
    time.sleep(seconds)
    return seconds


# Calls of ends_own_session_once by key, in this process: a count kept in the
# database would be rolled back with the attempt.
_OWN_SESSION_CALLS: dict[str, int] = {}


@activity(name="t.ends_own_session_once", atomic=True, retry=RetryPolicy(max_attempts=1))
def ends_own_session_once(key: str) -> int:
    """Its first call has the server end its worker's own session, mid-transaction."""
    from django.db import connection

    calls = _OWN_SESSION_CALLS[key] = _OWN_SESSION_CALLS.get(key, 0) + 1
    if calls == 1:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    return calls
