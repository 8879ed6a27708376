"""Django signals for a job's start and end (hotmesh_django.signals)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import transaction

from hotmesh_django.engine.control import retry_job
from hotmesh_django.models import Job
from hotmesh_django.signals import job_finished, job_started
from tests import activities as a
from tests import workflows as w
from tests.conftest import InProcessWorker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


class Heard:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: list[dict[str, Any]] = []
        self.finished: list[dict[str, Any]] = []
        # What went wrong inside a receiver: send_robust would only log it.
        self.errors: list[BaseException] = []

    def on_started(self, sender: Any, **kwargs: Any) -> None:
        assert sender is Job
        with self.lock:
            self.started.append(kwargs)

    def on_finished(self, sender: Any, **kwargs: Any) -> None:
        try:
            assert sender is Job
            # Sent after commit: the row says what the signal says.
            row = Job.objects.get(pk=kwargs["job_id"])
            assert (row.status, row.workflow_id) == (kwargs["status"], kwargs["workflow_id"])
        except BaseException as exc:  # noqa: BLE001 - reported by the fixture
            with self.lock:
                self.errors.append(exc)
        with self.lock:
            self.finished.append(kwargs)

    def finished_of(self, job_id: int) -> list[str]:
        with self.lock:
            return [f["status"] for f in self.finished if f["job_id"] == job_id]


@pytest.fixture
def heard() -> Iterator[Heard]:
    heard = Heard()
    job_started.connect(heard.on_started, weak=False)
    job_finished.connect(heard.on_finished, weak=False)
    yield heard
    job_started.disconnect(heard.on_started)
    job_finished.disconnect(heard.on_finished)
    assert heard.errors == []


def _id(workflow_id: str) -> int:
    return Job.objects.get(workflow_id=workflow_id).pk


def test_an_activity_job_sends_started_then_finished(heard: Heard, worker: InProcessWorker) -> None:
    handle = a.add.start(2, 3)
    assert handle.result(timeout=30) == 5
    job_id = _id(handle.id)
    (started,) = heard.started
    assert started == {
        "job_id": job_id,
        "workflow_id": handle.id,
        "name": "t.add",
        "queue": "default",
        "signal": job_started,
    }
    wait_until(lambda: heard.finished_of(job_id))
    assert heard.finished_of(job_id) == ["SUCCESSFUL"]


def test_a_workflow_and_its_child_each_send_both(heard: Heard, worker: InProcessWorker) -> None:
    handle = w.parent.start(3)
    handle.result(timeout=30)
    jobs = list(Job.objects.values_list("pk", flat=True))
    assert len(jobs) == 5  # the parent and its four children
    assert sorted(s["job_id"] for s in heard.started) == sorted(jobs)
    assert sorted(s["name"] for s in heard.started) == ["t.child"] * 4 + ["t.parent"]
    wait_until(lambda: all(heard.finished_of(pk) for pk in jobs))
    assert [heard.finished_of(pk) for pk in jobs] == [["SUCCESSFUL"]] * 5


def test_failures_and_cancels_are_sent_with_their_status(
    heard: Heard, worker: InProcessWorker
) -> None:
    failed = w.raises.start()
    with pytest.raises(Exception, match="boom|Error"):
        failed.result(timeout=30)
    waiting = w.waiter.start("never")
    wait_until(lambda: waiting.status() == "WAITING")
    assert waiting.cancel()
    wait_until(lambda: heard.finished_of(_id(failed.id)) and heard.finished_of(_id(waiting.id)))
    assert heard.finished_of(_id(failed.id)) == ["FAILED"]
    assert heard.finished_of(_id(waiting.id)) == ["CANCELLED"]


def test_a_job_retried_by_an_operator_finishes_again(heard: Heard, worker: InProcessWorker) -> None:
    handle = a.always_fail.start("twice")
    with pytest.raises(Exception, match="twice"):
        handle.result(timeout=30)
    job_id = _id(handle.id)
    wait_until(lambda: heard.finished_of(job_id))
    assert retry_job(handle.id)
    wait_until(lambda: len(heard.finished_of(job_id)) == 2)
    assert heard.finished_of(job_id) == ["FAILED", "FAILED"]
    assert [s["job_id"] for s in heard.started] == [job_id]  # started once


def test_a_start_rolled_back_sends_nothing(heard: Heard) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        a.add.start(1, 1)
        raise RuntimeError("roll back")
    assert heard.started == [] and not Job.objects.exists()


def test_a_receiver_that_raises_changes_nothing(worker: InProcessWorker) -> None:
    calls: list[str] = []

    def broken(sender: Any, **kwargs: Any) -> None:
        calls.append(kwargs["name"])
        raise ValueError("receiver bug")

    job_finished.connect(broken, weak=False)
    job_started.connect(broken, weak=False)
    try:
        handle = w.three_steps.start(1)
        assert handle.result(timeout=30) is not None
        assert handle.status() == "SUCCESSFUL"
        wait_until(lambda: calls.count("t.three_steps") == 2)  # started, then finished
    finally:
        job_finished.disconnect(broken)
        job_started.disconnect(broken)
