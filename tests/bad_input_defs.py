"""Workflows and activities for the bad-input tests (tests/integration/test_bad_input_more.py).

Each passes the engine something Postgres or JSON cannot hold from inside a running
workflow or activity, so the test can check that the job fails cleanly instead.
"""

from __future__ import annotations

from typing import Any

import hotmesh_django as hm
from hotmesh_django.definitions import RetryPolicy

ONCE = RetryPolicy(max_attempts=1)

# Too many digits for Python's int-to-text conversion (4300 by default).
HUGE_INT = 10**5000

# What each `sets_search` kind passes to hm.set_search().
SEARCHES: dict[str, dict[str, Any]] = {
    "nul_key": {"k\x00": 1},
    "surrogate_key": {"k\ud800": 1},
    "reserved_key": {"__hm__": "date"},
    "huge_int": {"k": HUGE_INT},
    "too_big": {"k": "x" * 5000},
}


@hm.workflow(name="bad.sets_search")
def sets_search(kind: str) -> str:
    hm.set_search(**SEARCHES[kind])
    return "set"


# What each `waits_for` kind waits on (a bad name cannot be a start's argument).
SIGNAL_NAMES = {"ok": "go", "nul": "g\x00o", "surrogate": "g\ud800o"}


@hm.workflow(name="bad.waits_for")
def waits_for(kind: str) -> Any:
    return hm.wait_for_signal(SIGNAL_NAMES[kind])


@hm.workflow(name="bad.echo")
def echo(*args: Any, **kwargs: Any) -> str:
    return "ran"


@hm.workflow(name="bad.returns_huge_int")
def returns_huge_int() -> int:
    return HUGE_INT


@hm.activity(name="bad.huge_int_result", retry=ONCE)
def huge_int_result() -> int:
    return HUGE_INT


@hm.workflow(name="bad.calls_huge_int_result")
def calls_huge_int_result() -> int:
    return huge_int_result()
