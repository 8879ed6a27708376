"""Temporal-style conveniences: signal-with-start and published state (queries)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

import hotmesh_django as hm
from hotmesh_django.models import Job, JobStatus, Journal, Signal, Stream
from tests import workflows as w
from tests.conftest import InProcessWorker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_signal_with_start_starts_once_and_delivers_every_signal(worker: InProcessWorker) -> None:
    first = w.stateful.using(workflow_id="counter").signal_with_start("add", 2, 5)
    second = w.stateful.using(workflow_id="counter").signal_with_start("add", 3, 99)
    assert first == second
    assert first.result(timeout=30) == 5
    assert Job.objects.filter(workflow_id="counter").count() == 1
    assert Signal.objects.filter(job__workflow_id="counter").count() == 2


def test_concurrent_signal_with_start_makes_one_job_and_keeps_every_signal() -> None:
    callers = 6
    barrier = threading.Barrier(callers)
    errors: list[BaseException] = []

    def call(i: int) -> None:
        try:
            barrier.wait()  # start together: they race for the same workflow_id
            w.stateful.using(workflow_id="raced").signal_with_start("add", i, callers)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()  # each thread owns its own connection

    threads = [threading.Thread(target=call, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert Job.objects.filter(workflow_id="raced").count() == 1
    payloads = Signal.objects.filter(job__workflow_id="raced").values_list("payload", flat=True)
    assert sorted(payloads) == list(range(callers))


def test_signal_with_start_is_atomic() -> None:
    with pytest.raises(TypeError, match="signal payload"):
        w.stateful.using(workflow_id="atomic").signal_with_start("add", object(), 1)
    assert not Job.objects.filter(workflow_id="atomic").exists()


def test_signal_with_start_refuses_a_finished_job(worker: InProcessWorker) -> None:
    handle = w.stateful.using(workflow_id="done").signal_with_start("add", 1, 1)
    handle.result(timeout=30)
    with pytest.raises(hm.JobFinishedError):
        w.stateful.using(workflow_id="done").signal_with_start("add", 1, 1)


def test_published_state_is_read_without_waking_the_workflow(worker: InProcessWorker) -> None:
    handle = w.stateful.start(10)
    wait_until(lambda: handle.status() == JobStatus.WAITING)
    history = Journal.objects.filter(job__workflow_id=handle.id).count()
    assert handle.state() == {"progress": 0, "total": 10}
    assert handle.query("total") == 10
    # Reading is a SELECT: no turn queued, nothing journaled, still parked.
    assert not Stream.objects.filter(job__workflow_id=handle.id).exists()
    assert Journal.objects.filter(job__workflow_id=handle.id).count() == history
    assert handle.status() == JobStatus.WAITING
    handle.signal("add", 4)
    wait_until(lambda: handle.query("progress") == 4)
    assert handle.query("total") == 10 and handle.query("missing", "n/a") == "n/a"
    handle.signal("add", 6)
    assert handle.result(timeout=30) == 10
    assert handle.state()["progress"] == 10


def test_set_state_outside_a_workflow_is_refused() -> None:
    with pytest.raises(hm.HotmeshError, match="inside a running workflow"):
        hm.set_state(x=1)


def test_continue_as_new_starts_fresh_runs_under_the_same_id(worker: InProcessWorker) -> None:
    handle = w.poller.using(workflow_id="poll").start(1, 4)
    assert handle.result(timeout=30) == 4
    final = Job.objects.get(workflow_id="poll")
    assert final.input == {"args": [4, 4], "kwargs": {}}
    assert final.activities.count() == 1  # an empty history each run
    runs = Job.objects.filter(workflow_id__startswith="poll#run-").order_by("id")
    assert [r.status for r in runs] == [JobStatus.SUCCESSFUL] * 3
    assert final.search["previous_run"] == runs.last().workflow_id
    assert "continued_as_new" in [e.event for e in runs.first().journal.all()]
