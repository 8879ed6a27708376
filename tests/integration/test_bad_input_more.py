"""Bad input inside workflows fails the job cleanly; bad input to start() and
signals is refused before any SQL, so the caller's transaction survives."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import transaction
from django.test import override_settings

import hotmesh_django as hm
from hotmesh_django.models import Job, Signal
from tests import bad_input_defs as d
from tests.conftest import InProcessWorker

pytestmark = pytest.mark.django_db(transaction=True)

# Long enough for a clean failure; a job stuck on a failing write never finishes.
RESULT_TIMEOUT = 20


def _fails_with(handle: hm.JobHandle, error_type: str, message: str) -> None:
    with pytest.raises(hm.WorkflowFailed, match=message) as caught:
        handle.result(timeout=RESULT_TIMEOUT)
    assert caught.value.type == error_type
    assert "failed" in [e["event"] for e in handle.journal()]


# -- 1. hm.set_search and hm.wait_for_signal inside a workflow ---------------------


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("nul_key", "NUL character"),
        ("surrogate_key", "not valid UTF-8"),
        ("reserved_key", "reserved key"),
        ("huge_int", "integer of more than"),
    ],
)
def test_set_search_with_bad_attributes_fails_the_job(
    worker: InProcessWorker, kind: str, message: str
) -> None:
    _fails_with(d.sets_search.start(kind), "TypeError", message)


@override_settings(HOTMESH_MAX_PAYLOAD_BYTES=1000)
def test_set_search_past_the_payload_limit_fails_the_job(worker: InProcessWorker) -> None:
    handle = d.sets_search.start("too_big")
    _fails_with(handle, "PayloadTooLarge", "search attributes object is \\d+ bytes")
    assert Job.objects.get(workflow_id=handle.id).search == {}


@pytest.mark.parametrize("kind", ["nul", "surrogate"])
def test_wait_for_signal_with_a_bad_name_fails_the_job(worker: InProcessWorker, kind: str) -> None:
    _fails_with(d.waits_for.start(kind), "ValueError", "signal name")


# -- 4. start() and signal input refused before SQL ----------------------------------


def _refused_in_atomic(call: Callable[[], Any], error: type, message: str) -> None:
    """`call` raises `error` and leaves the surrounding transaction usable."""
    with transaction.atomic():
        with pytest.raises(error, match=message):
            call()
        # A DataError from Postgres would make this raise TransactionManagementError.
        assert Job.objects.filter(name=d.echo.name).count() == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"y\x00": 2}, "argument name .* NUL character"),
        ({"y\ud800": 2}, "argument name .* not valid UTF-8"),
        ({"__hm__": "date", "v": "2026-01-01"}, "argument name '__hm__' is reserved"),
    ],
)
def test_start_refuses_bad_argument_names(kwargs: dict[str, Any], message: str) -> None:
    _refused_in_atomic(lambda: d.echo.start(**kwargs), TypeError, message)


@pytest.mark.parametrize("text", ["w\x00", "w\ud800"])
def test_start_refuses_ids_and_queues_postgres_cannot_store(text: str) -> None:
    for option in ("workflow_id", "queue", "concurrency_key"):
        _refused_in_atomic(
            lambda option=option: d.echo.using(**{option: text}).start(), ValueError, option
        )


def test_start_refuses_a_priority_out_of_range() -> None:
    _refused_in_atomic(lambda: d.echo.using(priority=2**31).start(), ValueError, "priority")


@pytest.mark.parametrize("name", ["g\x00o", "g\ud800o"])
def test_signals_refuse_a_name_postgres_cannot_store(name: str) -> None:
    handle = d.waits_for.using(workflow_id="bad-signal-target").start("ok")
    with transaction.atomic():
        with pytest.raises(ValueError, match="signal name"):
            handle.signal(name, 1)
        with pytest.raises(ValueError, match="signal name"):
            hm.signal(handle.id, name, 1)
        with pytest.raises(ValueError, match="signal name"):
            d.waits_for.using(workflow_id="bad-signal-new").signal_with_start(name)
        assert not Signal.objects.exists()
    assert not Job.objects.filter(workflow_id="bad-signal-new").exists()


# -- 5. integers past Python's int-to-text limit -------------------------------------


def test_start_and_signal_refuse_an_int_too_long_for_text() -> None:
    huge = d.HUGE_INT
    _refused_in_atomic(lambda: d.echo.start(1, huge), TypeError, r"argument 1 is an integer")
    _refused_in_atomic(lambda: d.echo.start(n=[huge]), TypeError, r"argument 'n'\[0\] is an")
    _refused_in_atomic(
        lambda: d.echo.using(search={"a": huge}).start(), TypeError, r"search\['a'\] is an"
    )
    handle = d.waits_for.start("ok")
    _refused_in_atomic(lambda: handle.signal("go", huge), TypeError, "signal payload is an integer")


def test_results_with_an_int_too_long_for_text_fail_the_job(worker: InProcessWorker) -> None:
    _fails_with(d.returns_huge_int.start(), "TypeError", "integer of more than")
    # The step fails (BadResult), and with it the workflow that called it.
    _fails_with(d.calls_huge_int_result.start(), "ActivityFailed", "integer of more than")
    with pytest.raises(hm.WorkflowFailed, match="integer of more than"):
        d.huge_int_result.start().result(timeout=RESULT_TIMEOUT)
