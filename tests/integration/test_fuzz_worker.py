"""Hypothesis-generated signal payloads and activity results, through a real worker.

Each value either arrives intact (the workflow returns it) or is refused with a
clear error; either way the worker keeps working and nothing else is lost.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings

import hotmesh_django as hm
from hotmesh_django.exceptions import PayloadTooLarge, WorkflowFailed
from hotmesh_django.models import Signal
from hotmesh_django.testing import WorkerThread
from tests.fuzzing import FUZZ, arguments, plain, same

pytestmark = pytest.mark.django_db(transaction=True)

THROUGH_A_WORKER = settings(FUZZ, max_examples=30)

# What the activity below hands back, by key: the worker runs in this process, so
# a result can be any Python object, not only what survives being an argument.
RESULTS: dict[str, Any] = {}


@hm.activity(name="t.fuzz.result", retry=hm.RetryPolicy(max_attempts=2, initial_interval=0.01))
def give_back(key: str) -> Any:
    return RESULTS.pop(key)


@hm.workflow(name="t.fuzz.returns")
def returns(key: str) -> Any:
    return give_back(key)


@hm.workflow(name="t.fuzz.waits")
def waits() -> Any:
    return hm.wait_for_signal("value")


@contextmanager
def worker() -> Iterator[WorkerThread]:
    """A worker for one example. Not one for the whole test: its thread draws from
    `random` (jitter), which Hypothesis takes for a strategy using global random."""
    with WorkerThread(concurrency=2) as thread:
        yield thread
        assert thread.is_alive()


@THROUGH_A_WORKER
@given(arguments)
def test_a_signal_payload_arrives_intact_or_is_refused(value: Any) -> None:
    handle = waits.start()
    signals = Signal.objects.count()
    with worker():
        try:
            hm.signal(handle.id, "value", value)
        except (TypeError, ValueError) as exc:  # PayloadTooLarge is a ValueError
            assert isinstance(exc, TypeError | PayloadTooLarge) or "payload" in str(exc)
            assert Signal.objects.count() == signals  # nothing half-stored
            hm.signal(handle.id, "value", "fallback")  # and the workflow still listens
            assert handle.result(timeout=30) == "fallback"
        else:
            assert same(handle.result(timeout=30), plain(value))


@THROUGH_A_WORKER
@given(arguments)
def test_an_activity_result_arrives_intact_or_fails_the_step_clearly(value: Any) -> None:
    key = str(uuid.uuid4())
    RESULTS[key] = value
    handle = returns.start(key)
    with worker():
        try:
            result = handle.result(timeout=30)
        except WorkflowFailed as failed:
            # Not storable: the step fails at once (a retry would return the same
            # value), and says why.
            assert failed.type == "ActivityFailed"
            assert "BadResult" in failed.message and "result" in failed.message
            assert handle.job().activities.get(seq=1).attempts == 1
        else:
            assert same(result, plain(value))
