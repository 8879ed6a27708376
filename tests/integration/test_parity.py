"""Temporal-style conveniences: signal-with-start and published state (queries)."""

from __future__ import annotations

import pytest

import hotmesh_django as hm
from hotmesh_django.models import Job, JobStatus, Signal
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
    assert handle.state() == {"progress": 0, "total": 10}
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
