"""Workflows and activities the admin tests run through real workers."""

from __future__ import annotations

from typing import Any

from django.db.models import F

import hotmesh_django as hm
from tests.models import Counter


@hm.activity(name="admin_tests.flaky", retry=hm.RetryPolicy(max_attempts=2, initial_interval=0.05))
def flaky(key: str, fail_times: int) -> str:
    """Fail the first `fail_times` calls for `key`, then succeed."""
    Counter.objects.get_or_create(key=key)
    Counter.objects.filter(key=key).update(value=F("value") + 1)
    calls = Counter.objects.get(key=key).value
    if calls <= fail_times:
        raise RuntimeError(f"flaky failure {calls} of {fail_times} for {key}")
    return f"ok after {calls} calls"


@hm.activity(name="admin_tests.echo")
def echo(value: Any) -> Any:
    return value


@hm.activity(name="admin_tests.boom", retry=hm.RetryPolicy(max_attempts=1))
def boom(message: str) -> None:
    raise ValueError(message)


@hm.workflow(name="admin_tests.approval")
def approval(key: str, fail_times: int) -> dict[str, Any]:
    """Run a flaky step, then wait for an operator's approval signal."""
    receipt = flaky(key, fail_times)
    hm.set_search(customer=key)
    decision = hm.wait_for_signal("approved")
    return {"receipt": receipt, "decision": decision}


@hm.workflow(name="admin_tests.steps")
def steps(n: int) -> list[Any]:
    """Echo n values, one step each, then sleep briefly."""
    values = [echo(i) for i in range(n)]
    hm.sleep(0.05)
    return values


@hm.workflow(name="admin_tests.parent")
def parent(n: int) -> list[Any]:
    handles = [steps.start(i) for i in range(1, n + 1)]
    return hm.gather(*handles)


@hm.workflow(name="admin_tests.failing")
def failing(message: str) -> None:
    boom(message)


@hm.workflow(name="admin_tests.two_waits")
def two_waits() -> list[Any]:
    first = hm.wait_for_signal("first")
    second = hm.wait_for_signal("second")
    return [first, second]
