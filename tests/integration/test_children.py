"""Child workflows under a workflow_id that is already taken, long parent ids, and
start options (delay) inside a workflow."""

from __future__ import annotations

import pytest

import hotmesh_django as hm
from hotmesh_django.engine import complete, control
from hotmesh_django.engine.children import child_workflow_id
from hotmesh_django.models import Job, JobStatus, Journal
from tests import activities as a
from tests import workflows as w
from tests.conftest import InProcessWorker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_child_id_of_a_finished_job_returns_its_result(worker: InProcessWorker) -> None:
    done = w.waiter.using(workflow_id="finished-child").start("go")
    done.signal("go", 7)
    assert done.result(timeout=20) == 7
    parent = w.child_by_id.start("finished-child")
    assert parent.result(timeout=20) == 7
    assert Job.objects.filter(workflow_id="finished-child").count() == 1
    events = [e["event"] for e in parent.journal()]
    assert "child_started" in events and "child_finished" in events
    # Through gather as well (.start() inside a workflow).
    w.child.using(workflow_id="finished-child-2").start(5).result(timeout=20)
    assert w.gather_child_by_id.start("finished-child-2").result(timeout=20) == [105]


def test_a_running_job_without_a_parent_is_adopted_as_the_child(worker: InProcessWorker) -> None:
    running = w.waiter.using(workflow_id="adopted").start("go")
    wait_until(lambda: running.status() == JobStatus.WAITING, timeout=20)
    parent = w.child_by_id.start("adopted")
    wait_until(lambda: Job.objects.get(workflow_id="adopted").parent_id is not None, timeout=20)
    running.signal("go", "hello")
    assert parent.result(timeout=20) == "hello"
    child = Job.objects.get(workflow_id="adopted")
    assert child.parent == parent.job() and child.parent_step == 1


def test_a_child_id_that_reports_to_another_parent_fails_the_step_clearly(
    worker: InProcessWorker,
) -> None:
    first = w.child_by_id.start("shared-child")
    wait_until(lambda: Job.objects.filter(workflow_id="shared-child").exists(), timeout=20)
    second = w.child_by_id.start("shared-child")
    with pytest.raises(hm.WorkflowFailed, match="reports to one parent step"):
        second.result(timeout=20)
    assert Journal.objects.filter(job=second.job(), event="step_failed").exists()
    # The first parent still gets its child's result.
    hm.signal("shared-child", "go", 1)
    assert first.result(timeout=20) == 1


def test_a_parent_id_of_the_longest_length_still_starts_children(worker: InProcessWorker) -> None:
    handle = w.parent.using(workflow_id="p" * 255).start(1)
    assert handle.result(timeout=60) == [101, 100, 101, 102]
    ids = list(Job.objects.filter(parent=handle.job()).values_list("workflow_id", flat=True))
    assert len(ids) == 4 and all(len(i) <= 255 for i in ids)
    assert len(set(ids)) == 4


def test_child_ids_are_stable_and_fit() -> None:
    assert child_workflow_id("order-1", 3, None) == "order-1/3"
    assert child_workflow_id("order-1", 3, "chosen") == "chosen"
    long = child_workflow_id("x" * 255, 12, None)
    assert len(long) == 255 and long.endswith("/12")
    assert long == child_workflow_id("x" * 255, 12, None)
    assert long != child_workflow_id("x" * 254 + "y", 12, None)


def test_delay_holds_inside_a_workflow_for_steps_and_children(worker: InProcessWorker) -> None:
    step_wait, child_wait = w.delayed_calls.start(0.6).result(timeout=30)
    assert step_wait >= 0.6
    assert child_wait >= 0.6


def test_a_child_id_taken_by_an_activity_job_fails_the_step(worker: InProcessWorker) -> None:
    job = a.add.using(workflow_id="activity-job").start(1, 2)
    assert job.result(timeout=20) == 3
    parent = w.child_by_id.start("activity-job")
    with pytest.raises(hm.WorkflowFailed, match="belongs to an activity job"):
        parent.result(timeout=20)
    # Taken by a workflow of another name: its outcome is not this child's either.
    w.child.using(workflow_id="other-workflow").start(1).result(timeout=20)
    with pytest.raises(hm.WorkflowFailed, match="not of 't.waiter'"):
        w.child_by_id.start("other-workflow").result(timeout=20)
    assert Job.objects.get(workflow_id="activity-job").parent_id is None


def test_a_workflow_cannot_wait_for_itself_or_its_parent(worker: InProcessWorker) -> None:
    itself = w.nests.using(workflow_id="loop-self").start("loop-self", "x")
    with pytest.raises(hm.WorkflowFailed, match="cannot wait for itself"):
        itself.result(timeout=20)
    root = w.nests.using(workflow_id="loop-root").start("loop-child", "loop-root")
    with pytest.raises(hm.WorkflowFailed):
        root.result(timeout=20)
    child = Job.objects.get(workflow_id="loop-child")
    assert child.status == JobStatus.FAILED
    assert "cannot wait for itself" in child.error["message"]
    assert Job.objects.get(workflow_id="loop-root").parent_id is None
    assert Job.objects.get(workflow_id="loop-self").parent_id is None


def test_a_child_keeps_its_own_timeout(worker: InProcessWorker) -> None:
    parent = w.child_times_out.start()
    with pytest.raises(hm.WorkflowFailed):
        parent.result(timeout=20)
    child = Job.objects.get(parent=parent.job())
    assert child.status == JobStatus.FAILED
    assert child.error["type"] == "WorkflowTimeout"


def test_each_continued_run_has_the_timeout(worker: InProcessWorker) -> None:
    handle = w.continues_then_waits.start(0)
    with pytest.raises(hm.WorkflowFailed) as failed:
        handle.result(timeout=20)
    assert failed.value.type == "WorkflowTimeout"
    assert Job.objects.filter(workflow_id__startswith=f"{handle.id}#run-").count() == 1


def test_children_left_running_are_cancelled_when_the_parent_ends(
    worker: InProcessWorker,
) -> None:
    parent = w.leaves_child.start("left-behind")
    assert parent.result(timeout=20) == "done"
    left = hm.get_handle("left-behind")
    wait_until(lambda: left.status() == JobStatus.CANCELLED, timeout=20)
    assert "ended (SUCCESSFUL)" in left.job().error["message"]
    assert [s["status"] for s in parent.activities()] == [JobStatus.CANCELLED]
    # A parent that times out takes the child it was waiting for along.
    timed_out = w.waits_on_child.start("waited-for")
    with pytest.raises(hm.WorkflowFailed, match="deadline"):
        timed_out.result(timeout=20)
    waited = hm.get_handle("waited-for")
    assert waited.status() == JobStatus.CANCELLED
    assert "ended (FAILED)" in waited.job().error["message"]
    # Ending on a step's ack, which this worker runs itself (engine/sticky.py).
    parent = w.leaves_child_then_step.start("left-behind-2")
    assert parent.result(timeout=20) == 3
    assert hm.get_handle("left-behind-2").status() == JobStatus.CANCELLED


def test_a_cancel_that_waited_for_a_turn_takes_the_children_it_started(
    worker: InProcessWorker,
) -> None:
    w.TURN_BEGUN.clear()
    handle = w.slow_turn.start(3)
    assert w.TURN_BEGUN.wait(10)
    # Waits for the turn's lock; the children that turn started are cancelled too.
    assert control.cancel_tree(handle.id) == 4
    children = Job.objects.filter(parent=handle.job())
    assert sorted(children.values_list("status", flat=True)) == [JobStatus.CANCELLED] * 3


def test_a_cancel_follows_a_run_that_continued_as_new_meanwhile(worker: InProcessWorker) -> None:
    w.TURN_BEGUN.clear()
    handle = w.slow_continue.start(0)
    assert w.TURN_BEGUN.wait(10)
    assert handle.cancel() is True  # the run it read continued as new while it waited
    assert handle.status() == JobStatus.CANCELLED
    assert not Job.objects.filter(workflow_id__startswith=handle.id).active().exists()


def test_a_parent_ending_takes_the_next_run_of_a_child_that_continued(
    worker: InProcessWorker,
) -> None:
    w.TURN_BEGUN.clear()
    parent = w.ends_on_signal.start("continuing-child")
    assert w.TURN_BEGUN.wait(10)  # the child's first turn, about to continue as new
    parent.signal("end")
    assert parent.result(timeout=20) == "ended"
    assert hm.get_handle("continuing-child").status() == JobStatus.CANCELLED
    assert not Job.objects.filter(parent=parent.job()).active().exists()


def test_a_child_chain_the_cascade_could_not_catch_stops_at_its_next_run(
    worker: InProcessWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One round: the cascade gives up on children that continue as new faster than
    # it can cancel them (as a hundred rounds may); each chain must stop by itself.
    monkeypatch.setattr(complete, "_CHILD_ROUNDS", 1)
    parent = w.spin_parent.start(2)
    runs = Job.objects.filter(workflow_id__startswith=f"{parent.id}/")
    wait_until(lambda: runs.filter(status=JobStatus.SUCCESSFUL).count() >= 4, timeout=20)
    parent.signal("end")
    assert parent.result(timeout=20) == 2
    wait_until(lambda: not runs.active().exists(), timeout=20)
    last = runs.filter(status=JobStatus.CANCELLED)
    assert last.count() == 2
    assert all("ended (SUCCESSFUL)" in job.error["message"] for job in last)
