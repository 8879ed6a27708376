"""Workflows: replay, timers, signals, children, fan-out, determinism, failures."""

from __future__ import annotations

import datetime
import logging
import time
import uuid
from collections.abc import Callable

import pytest
from django.db import connection, transaction

import hotmesh_django as hm
from hotmesh_django.models import Activity, Job, JobStatus, Journal, Signal, Stream
from tests import activities as a
from tests import workflows as w
from tests.conftest import InProcessWorker, wait_until
from tests.models import Counter, Effect

pytestmark = pytest.mark.django_db(transaction=True)


def _status(handle: hm.JobHandle, status: JobStatus) -> bool:
    return handle.status() == status


def test_three_sequential_steps(worker: InProcessWorker) -> None:
    handle = w.three_steps.start(1)
    assert handle.result(timeout=30) == 4
    steps = handle.activities()
    assert [(s["seq"], s["name"], s["status"]) for s in steps] == [
        (1, "t.add", "SUCCESSFUL"),
        (2, "t.add", "SUCCESSFUL"),
        (3, "t.add", "SUCCESSFUL"),
    ]
    assert not Stream.objects.exists()
    completed = Journal.objects.filter(job__workflow_id=handle.id, event="step_completed")
    assert sorted(completed.values_list("step", flat=True)) == [1, 2, 3]


def test_finished_steps_are_not_run_again_on_replay(worker: InProcessWorker) -> None:
    handle = w.slow_steps.start("replay", 3, 0.0)
    assert handle.result(timeout=30) == 3
    assert list(Counter.objects.order_by("key").values_list("value", flat=True)) == [1, 1, 1]


def test_durable_sleep(worker: InProcessWorker) -> None:
    handle = w.sleeper.start(0.3)
    elapsed = float(handle.result(timeout=30))
    assert 0.3 <= elapsed < 1.5
    events = [e["event"] for e in handle.journal()]
    assert "timer_set" in events and "timer_fired" in events


def test_sleep_survives_without_a_worker(start_worker: object) -> None:
    handle = w.sleeper.start(0.2)
    first = start_worker()  # type: ignore[operator]
    wait_until(lambda: Stream.objects.filter(kind="TIMER").exists())
    first.stop()
    assert handle.status() == JobStatus.WAITING
    time.sleep(0.4)  # the timer comes due while no worker runs
    start_worker()  # type: ignore[operator]
    assert float(handle.result(timeout=30)) >= 0.2


def test_signal_sent_before_the_wait_is_delivered(worker: InProcessWorker) -> None:
    handle = w.waiter.using(delay=0.3).start("approved")
    handle.signal("approved", {"by": "ops"})
    assert handle.result(timeout=30) == {"by": "ops"}
    assert Signal.objects.get().step == 1


def test_signal_after_the_wait(worker: InProcessWorker) -> None:
    handle = w.waiter.start("approved")
    wait_until(lambda: _status(handle, JobStatus.WAITING))
    hm.signal(handle.id, "approved", [1, 2, 3])
    assert handle.result(timeout=30) == [1, 2, 3]


def test_signals_are_delivered_in_order(worker: InProcessWorker) -> None:
    handle = w.two_signals.using(delay=0.2).start()
    handle.signal("go", "first")
    handle.signal("go", "second")
    handle.signal("other", "ignored")
    assert handle.result(timeout=30) == ["first", "second"]


def test_a_signal_does_not_start_a_delayed_job_early(worker: InProcessWorker) -> None:
    handle = w.two_signals.using(delay=1.5).start()
    handle.signal("go", "first")
    handle.signal("go", "second")
    assert handle.result(timeout=30) == ["first", "second"]
    job = handle.job()
    assert job.started_at is not None
    assert (job.started_at - job.created_at).total_seconds() >= 1.5


def test_turns_left_queued_by_a_finished_job_are_dropped_quietly(
    start_worker: Callable[..., InProcessWorker], caplog: pytest.LogCaptureFixture
) -> None:
    # Three signals at once queue turns that the first one, taking all three
    # signals and finishing the job, leaves with no message: not a lost lease.
    start_worker(concurrency=8)
    start_worker(concurrency=8)
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            handle = w.stateful.start(3)
            wait_until(lambda h=handle: _status(h, JobStatus.WAITING))
            for _ in range(3):
                handle.signal("add", 1)
            assert handle.result(timeout=20) == 3
    assert "turn dropped" not in caplog.text


def test_a_result_dropped_because_the_job_was_cancelled_is_not_a_lost_lease(
    worker: InProcessWorker, caplog: pytest.LogCaptureFixture
) -> None:
    task = a.slow.start(0.6, "cancelled-task")
    flow = w.slow_steps.start("cancelled-flow", 1, 0.6)
    running = Activity.objects.filter(status=JobStatus.RUNNING)
    wait_until(lambda: running.count() == 2)
    with caplog.at_level(logging.DEBUG, logger="hotmesh_django.engine"):
        assert task.cancel() and flow.cancel()
        wait_until(lambda: caplog.text.count("job ended, result dropped") == 2)
    assert "lease lost" not in caplog.text


def test_workflow_code_sends_each_signal_once(worker: InProcessWorker) -> None:
    """Each replay of the sender sent its signals again."""
    target = w.two_signals.start()
    sender = w.signals_from_code.start(target.id)
    assert sender.result(timeout=20) == "sent"
    assert target.result(timeout=20) == [1, 2]
    assert Signal.objects.filter(job=target.job()).count() == 3
    received = Journal.objects.filter(job=target.job(), event="signal_received")
    assert {e.data["by"] for e in received} == {f"workflow {sender.id}"}


def test_signal_timeout_raises_inside_the_workflow(worker: InProcessWorker) -> None:
    handle = w.waiter.start("never", 0.3)
    assert handle.result(timeout=30) == "timed out"
    assert "signal_timed_out" in [e["event"] for e in handle.journal()]


def test_signal_errors() -> None:
    with pytest.raises(hm.JobNotFound):
        hm.signal("no-such-job", "x")
    handle = w.waiter.start("x")
    with pytest.raises(TypeError, match="signal payload"):
        handle.signal("x", object())
    with pytest.raises(ValueError, match="signal name"):
        handle.signal("", 1)
    handle.cancel()
    with pytest.raises(hm.JobFinishedError, match="CANCELLED"):
        handle.signal("x", 1)
    assert not Signal.objects.exists()


def test_child_workflows_and_gather(worker: InProcessWorker) -> None:
    handle = w.parent.start(1)
    assert handle.result(timeout=60) == [101, 100, 101, 102]
    parent = Job.objects.get(workflow_id=handle.id)
    children = Job.objects.filter(parent=parent).order_by("parent_step")
    assert [c.workflow_id for c in children] == [f"{handle.id}/{i}" for i in (1, 2, 3, 4)]
    assert all(c.status == JobStatus.SUCCESSFUL for c in children)


def test_activity_fan_out(worker: InProcessWorker) -> None:
    handle = w.fanout.start(50)
    assert handle.result(timeout=20) == sum(range(50))
    assert Activity.objects.filter(job__workflow_id=handle.id).count() == 50


def test_thousand_children_gathered(start_worker: object) -> None:
    start_worker(concurrency=8)  # type: ignore[operator]
    handle = w.child_fanout.start(1000)
    assert handle.result(timeout=240) == sum(range(100, 1100))
    assert Job.objects.filter(parent__workflow_id=handle.id, status="SUCCESSFUL").count() == 1000
    assert not Stream.objects.exists()


def test_idempotent_workflow_start_in_any_state(worker: InProcessWorker) -> None:
    handle = w.three_steps.using(workflow_id="wf-1").start(1)
    assert handle.result(timeout=30) == 4
    again = w.three_steps.using(workflow_id="wf-1").start(99)
    assert again.result(timeout=1) == 4
    assert Job.objects.filter(workflow_id="wf-1").count() == 1


def test_workflow_start_rolls_back_with_the_caller() -> None:
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        w.three_steps.start(1)
        1 / 0  # noqa: B018
    assert not Job.objects.exists() and not Stream.objects.exists()


def test_deterministic_values_replay(worker: InProcessWorker) -> None:
    handle = w.deterministic.start()
    wait_until(lambda: _status(handle, JobStatus.WAITING))
    handle.signal("continue")
    result = handle.result(timeout=30)
    first = result["first"]
    assert isinstance(first["now"], datetime.datetime)
    assert isinstance(first["uuid"], uuid.UUID)
    # Six recorded values, written once each; the replay after the signal got the
    # first three back unchanged (else the result would hold fresh ones).
    recorded = [a["output"] for a in handle.activities() if a["kind"] == "VALUE"]
    assert recorded == [*first.values(), *result["again"].values()]
    assert result["again"]["uuid"] != first["uuid"]


def test_nondeterminism_fails_the_job_naming_the_step(worker: InProcessWorker) -> None:
    w.FLAGS["changed"] = False
    try:
        handle = w.changes.start()
        wait_until(lambda: _status(handle, JobStatus.WAITING))
        # Deploy new code: the workflow now calls an activity where it waited.
        w.FLAGS["changed"] = True
        handle.signal("continue")
        with pytest.raises(hm.WorkflowFailed) as info:
            handle.result(timeout=30)
    finally:
        w.FLAGS["changed"] = False
    assert info.value.type == "NonDeterminismError"
    assert "Step 2" in info.value.message


def test_patched_keeps_old_histories_on_the_old_path(worker: InProcessWorker) -> None:
    w.FLAGS["patched"] = False
    try:
        old = w.versioned_after.using(workflow_id="old").start()
        assert old.result(timeout=30) == "ok"
        w.FLAGS["patched"] = True
        new = w.versioned_after.using(workflow_id="new").start()
        assert new.result(timeout=30) == "ok"
    finally:
        w.FLAGS["patched"] = False
    assert [a["name"] for a in new.activities()] == ["patched:extra-step", "t.echo", "t.add"]
    assert [a["name"] for a in old.activities()] == ["t.add"]


def test_patched_during_a_running_job(worker: InProcessWorker) -> None:
    handle = w.versioned.start()
    wait_until(lambda: _status(handle, JobStatus.WAITING))
    handle.signal("continue")
    assert handle.result(timeout=30) == "new"


def test_patched_gives_one_answer_for_the_whole_run(worker: InProcessWorker) -> None:
    w.FLAGS["patched"] = False
    try:
        old = w.patched_loop.start(3)
        wait_until(lambda: _status(old, JobStatus.WAITING))
        w.FLAGS["patched"] = True  # deployed while the run waits after its first pass
        old.signal("next")
        assert old.result(timeout=30) == ["old0", "old1", "old2"]
        new = w.patched_loop.start(3)
        new.signal("next")
        assert new.result(timeout=30) == ["new0", "new1", "new2"]
    finally:
        w.FLAGS["patched"] = False
    # One marker for the run, not one per call.
    names = [a["name"] for a in new.activities()]
    assert names.count("patched:loop") == 1 and names[0] == "patched:loop"


def test_activity_failure_can_be_caught_for_compensation(worker: InProcessWorker) -> None:
    result = w.compensates.start().result(timeout=30)
    assert result == "compensated after ValueError: charge declined"


def test_uncaught_step_failure_fails_the_workflow(worker: InProcessWorker) -> None:
    with pytest.raises(hm.WorkflowFailed) as info:
        w.step_fails.start().result(timeout=30)
    assert info.value.type == "ActivityFailed"
    assert "uncaught" in info.value.message


def test_workflow_exception_fails_the_job(worker: InProcessWorker) -> None:
    with pytest.raises(hm.WorkflowFailed) as info:
        w.raises.start().result(timeout=30)
    assert (info.value.type, info.value.message) == ("RuntimeError", "workflow bug")
    assert "Traceback" in info.value.traceback


def test_workflow_timeout(worker: InProcessWorker) -> None:
    with pytest.raises(hm.WorkflowFailed) as info:
        w.times_out.start().result(timeout=30)
    assert info.value.type == "WorkflowTimeout"


def test_cancel_cascades_to_children(worker: InProcessWorker) -> None:
    handle = w.waiter.start("never")
    child = w.waiter.using(workflow_id="kid").start("never")
    Job.objects.filter(workflow_id="kid").update(parent=Job.objects.get(workflow_id=handle.id))
    wait_until(lambda: _status(handle, JobStatus.WAITING))
    assert handle.cancel() is True
    assert child.status() == JobStatus.CANCELLED
    with pytest.raises(hm.JobCancelled):
        handle.result(timeout=1)
    assert not Stream.objects.exists()


def test_atomic_steps_write_exactly_once(worker: InProcessWorker) -> None:
    assert w.atomic_steps.start("ax", 3).result(timeout=30) == 3
    assert sorted(Effect.objects.values_list("key", flat=True)) == ["ax:0", "ax:1", "ax:2"]


def test_atomic_step_failure_rolls_back_its_writes(worker: InProcessWorker) -> None:
    from tests import activities as a

    with pytest.raises(hm.WorkflowFailed):
        a.effect_then_fail.start("rolled").result(timeout=30)
    assert not Effect.objects.exists()


def test_search_attributes(worker: InProcessWorker) -> None:
    handle = w.searchable.start("acme")
    handle.result(timeout=30)
    assert Job.objects.filter(search__customer="acme", search__tier="gold").count() == 1


def test_bad_workflow_result(worker: InProcessWorker) -> None:
    with pytest.raises(hm.WorkflowFailed, match="not JSON serializable"):
        w.returns_bad.start().result(timeout=30)


def test_missing_workflow_code_parks_the_job(worker: InProcessWorker) -> None:
    job = Job.objects.create(workflow_id="orphan", name="gone.workflow")
    Stream.objects.create(queue="default", kind="TURN", job=job, name="gone.workflow")
    wait_until(lambda: Job.objects.get(pk=job.pk).status == JobStatus.WAITING)
    job.refresh_from_db()
    assert job.error["type"] == "UnknownWorkflow"
    assert Stream.objects.filter(job=job, kind="TIMER", status="SCHEDULED").exists()
    # The code comes back (renamed in the registry's eyes): the job resumes.
    Job.objects.filter(pk=job.pk).update(name="t.three_steps", input={"args": [1], "kwargs": {}})
    Stream.objects.filter(job=job).update(visible_at=datetime.datetime.now(datetime.UTC))
    with connection.cursor() as cursor:  # what setting any timer does: workers look again
        cursor.execute("SELECT pg_notify('hotmesh', 't:0')")
    assert hm.get_handle("orphan").result(timeout=30) == 4


def test_retry_a_failed_workflow_from_the_failed_step(worker: InProcessWorker) -> None:
    from hotmesh_django.engine.control import retry_job

    handle = w.step_fails.start()
    with pytest.raises(hm.WorkflowFailed):
        handle.result(timeout=30)
    assert retry_job(handle.id) is True
    assert retry_job(handle.id) is False  # no longer FAILED
    with pytest.raises(hm.WorkflowFailed):
        handle.result(timeout=30)
    assert Counter.objects.get(key="always_fail:uncaught").value == 6


def test_every_run_of_the_code_sees_the_values_recorded(worker: InProcessWorker) -> None:
    """A turn the sticky path replayed and left to the usual path drew new values in
    the usual path's replay: the first run saw (and could log) values never stored."""
    w.DRAWS_SEEN.clear()
    handle = w.draws.start()
    recorded = handle.result(timeout=30)
    assert len(w.DRAWS_SEEN) >= 3
    assert all(list(seen) == recorded for seen in w.DRAWS_SEEN), w.DRAWS_SEEN
