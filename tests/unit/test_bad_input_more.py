"""Bad input refused with a clear error where it is given, before any SQL runs."""

from __future__ import annotations

import datetime
import decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

import hotmesh_django as hm
from hotmesh_django.checks import check_settings
from hotmesh_django.definitions import RetryPolicy
from hotmesh_django.serialization import encode_value, to_json
from tests import activities, workflows

BAD_TEXT = ["a\x00b", "a\ud800b"]


# -- 1. wait_for_signal names ---------------------------------------------------------


@pytest.mark.parametrize("name", BAD_TEXT)
def test_wait_for_signal_refuses_a_name_postgres_cannot_store(name: str) -> None:
    with pytest.raises(ValueError, match="signal name"):
        hm.wait_for_signal(name)


# -- 2. queue, activity and workflow names --------------------------------------------


@pytest.mark.parametrize("text", BAD_TEXT)
def test_decorators_refuse_names_and_queues_postgres_cannot_store(text: str) -> None:
    for decorator in (hm.activity, hm.workflow):
        with pytest.raises(ValueError, match="name"):
            decorator(name=f"bad.{text}")
        with pytest.raises(ValueError, match="queue"):
            decorator(queue=text)


@pytest.mark.parametrize("text", BAD_TEXT)
def test_using_refuses_a_queue_postgres_cannot_store(text: str) -> None:
    with pytest.raises(ValueError, match="queue"):
        activities.add.using(queue=text)
    with pytest.raises(ValueError, match="queue"):
        workflows.three_steps.using(queue=text)


# -- 3. RetryPolicy intervals and numbers ---------------------------------------------


def test_retry_intervals_are_kept_as_float_seconds() -> None:
    policy = RetryPolicy(
        max_attempts=5,
        initial_interval=datetime.timedelta(seconds=2),
        max_interval=decimal.Decimal("5"),
    )
    assert policy.initial_interval == 2.0
    assert policy.max_interval == 5.0
    assert policy.delay_after(1) == 2.0
    assert policy.delay_after(3) == 5.0  # capped


@pytest.mark.parametrize("field", ["initial_interval", "max_interval"])
def test_retry_intervals_refuse_strings_and_flags(field: str) -> None:
    for bad in ("1", True):
        with pytest.raises(TypeError, match=f"{field} must be a number of seconds"):
            RetryPolicy(**{field: bad})


def test_retry_counts_refuse_flags() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=True)
    with pytest.raises(ValueError, match="backoff"):
        RetryPolicy(backoff=True)


def test_durations_refuse_strings_and_flags() -> None:
    # As RetryPolicy does: seconds are numbers (or timedeltas), never text.
    for bad in ("5", True):
        with pytest.raises(TypeError, match="timeout must be a number of seconds"):
            hm.activity(timeout=bad)
        with pytest.raises(TypeError, match="delay must be a number of seconds"):
            activities.add.using(delay=bad)


# -- 4. priority, workflow_id, concurrency_key ----------------------------------------


@pytest.mark.parametrize("priority", [2**31, -(2**31) - 1, 10**30])
def test_priority_must_fit_a_postgres_integer(priority: int) -> None:
    with pytest.raises(ValueError, match="priority must be from"):
        hm.activity(priority=priority)
    with pytest.raises(ValueError, match="priority must be from"):
        hm.workflow(priority=priority)
    with pytest.raises(ValueError, match="priority must be from"):
        activities.add.using(priority=priority)


def test_priority_refuses_a_flag() -> None:
    with pytest.raises(TypeError, match="priority must be an int"):
        hm.workflow(priority=True)
    with pytest.raises(TypeError, match="priority must be an int"):
        workflows.three_steps.using(priority=False)


def test_the_priority_range_ends_are_accepted() -> None:
    activities.add.using(priority=2**31 - 1)
    activities.add.using(priority=-(2**31))


@pytest.mark.parametrize("text", BAD_TEXT)
def test_using_refuses_ids_postgres_cannot_store(text: str) -> None:
    with pytest.raises(ValueError, match="workflow_id"):
        workflows.three_steps.using(workflow_id=text)
    with pytest.raises(ValueError, match="concurrency_key"):
        workflows.three_steps.using(concurrency_key=text)


# -- 5. integers past Python's int-to-text limit --------------------------------------


def test_an_int_too_long_for_text_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match=r"argument 'n'\[1\] is an integer of more than"):
        to_json([1, 10**5000], what="argument 'n'")
    with pytest.raises(TypeError, match="the signal payload is an integer of more than"):
        encode_value(-(10**5000), what="the signal payload")
    # Long but within the limit: still stored as a number.
    assert to_json(10**4000) == 10**4000


# -- 6. HOTMESH_QUEUES keys -----------------------------------------------------------


@override_settings(HOTMESH_QUEUES={5: {"concurrency": 1}})
def test_a_queue_setting_with_a_non_string_key_is_a_check_error() -> None:
    errors = check_settings()
    assert [e.id for e in errors] == ["hotmesh.E008"]
    assert "HOTMESH_QUEUES has the key 5" in errors[0].msg
    # The worker command runs the checks first, so it refuses to start.
    with pytest.raises(SystemCheckError, match="hotmesh.E008"):
        call_command("hotmesh_worker", "--burst", skip_checks=False)


# -- 7. JobHandle.result(timeout=) ----------------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "error"),
    [("5", TypeError), (True, TypeError), (float("nan"), ValueError), (-1, ValueError)],
)
def test_result_refuses_a_bad_timeout_before_waiting(timeout: Any, error: type) -> None:
    with pytest.raises(error, match="timeout must be a number of seconds"):
        hm.JobHandle("any").result(timeout=timeout)


# -- decorated functions and their options ----------------------------------------------


async def _coroutine() -> None:
    """An async function, which a worker thread could never run."""


async def _async_generator() -> Any:
    yield 1


def _generator() -> Any:
    yield 1


class _Callable:
    pass


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (_coroutine, "is async"),
        (_async_generator, "is async"),
        (_generator, "is a generator"),
        (_Callable, "not a class"),
    ],
)
def test_decorators_refuse_what_a_worker_cannot_run(target: Any, message: str) -> None:
    for decorator in (hm.activity, hm.workflow):
        with pytest.raises(TypeError, match=message):
            decorator(name="t.never_registered")(target)


def test_a_queue_name_with_a_comma_is_refused() -> None:
    # --queues a,b could never select it.
    with pytest.raises(ValueError, match="comma"):
        hm.activity(queue="a,b")
    with pytest.raises(ValueError, match="comma"):
        activities.add.using(queue="a,b")


def test_atomic_must_be_a_flag() -> None:
    with pytest.raises(TypeError, match="atomic must be True or False"):
        hm.activity(atomic="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("change_id", ["", 5, "x" * 300, "a\x00b"])
def test_patched_refuses_a_bad_change_id(change_id: Any) -> None:
    with pytest.raises(ValueError, match="change id"):
        hm.patched(change_id)
