"""Activity jobs end to end with an in-process worker on real Postgres."""

from __future__ import annotations

import datetime
import decimal
import threading
import uuid
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import override_settings

import hotmesh_django as hm
from hotmesh_django.models import Activity, Job, JobStatus, Journal, Stream
from hotmesh_django.testing import WorkerThread
from tests import activities as a
from tests import workflows as w
from tests.conftest import InProcessWorker
from tests.models import Counter

pytestmark = pytest.mark.django_db(transaction=True)


def test_start_returns_a_handle_and_the_result(worker: InProcessWorker) -> None:
    handle = a.add.start(2, 3)
    assert isinstance(handle, hm.JobHandle)
    assert handle.result(timeout=30) == 5
    assert handle.status() == JobStatus.SUCCESSFUL
    job = Job.objects.get(workflow_id=handle.id)
    assert job.kind == "ACTIVITY" and job.started_at and job.finished_at
    assert not Stream.objects.exists()
    events = [e["event"] for e in handle.journal()]
    assert events == ["created", "step_completed", "completed"]


def test_rich_types_round_trip_through_a_worker(worker: InProcessWorker) -> None:
    value: dict[str, Any] = {
        "when": datetime.datetime(2026, 11, 25, 8, 0, tzinfo=datetime.UTC),
        "day": datetime.date(2026, 1, 2),
        "price": decimal.Decimal("19.99"),
        "id": uuid.UUID(int=7),
        "list": [1, "two", None],
    }
    assert a.echo.start(value).result(timeout=30) == value


def test_start_joins_the_callers_transaction() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        a.add.start(1, 1)
        assert Job.objects.count() == 1
        raise RuntimeError("roll back")
    assert not Job.objects.exists()
    assert not Stream.objects.exists()
    assert not Journal.objects.exists()


def test_same_workflow_id_returns_the_same_job() -> None:
    first = a.add.using(workflow_id="order-1").start(1, 1)
    second = a.add.using(workflow_id="order-1").start(5, 5)
    assert first == second
    assert Job.objects.filter(workflow_id="order-1").count() == 1
    assert Stream.objects.count() == 1
    assert Job.objects.get().input == {"args": [1, 1], "kwargs": {}}


def test_non_json_argument_fails_at_start_and_enqueues_nothing() -> None:
    with pytest.raises(TypeError, match="argument 1 is of type object"):
        a.echo.start(1, object())  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="argument 'value'"):
        a.echo.start(value={1, 2})
    assert not Job.objects.exists()


def test_non_json_positional_argument_is_named_by_its_parameter() -> None:
    with pytest.raises(TypeError, match=r"argument 1 \('b'\)\[0\] is of type set"):
        a.add.start(1, [{2}])
    with pytest.raises(TypeError, match=r"argument 0 \('n'\) is of type object"):
        w.three_steps.start(object())
    assert not Job.objects.exists()


@override_settings(HOTMESH_MAX_PAYLOAD_BYTES=200)
def test_oversized_start_names_the_parameter() -> None:
    with pytest.raises(hm.PayloadTooLarge, match=r"the largest is argument 0 \('value'\)"):
        a.echo.start("x" * 300)
    assert not Job.objects.exists()


def test_arguments_that_do_not_fit_the_function_fail_at_start() -> None:
    with pytest.raises(
        TypeError, match=r"t.add.start\(\) arguments do not fit add\(a, b\): missing"
    ):
        a.add.start(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="missing a required argument: 'b'"):
        a.add.start(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        a.add.start(1, 2, bogus=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"three_steps\(n\): too many positional arguments"):
        w.three_steps.start(1, 2)  # type: ignore[call-arg]
    # Both wrong: the argument that is not JSON is named, by position and parameter.
    with pytest.raises(TypeError, match=r"argument 1 \('b'\) is of type object"):
        a.add.start(1, object(), 3)  # type: ignore[call-arg]
    assert not Job.objects.exists()
    assert not Stream.objects.exists()
    # Defaults and keywords that fit are fine.
    w.waiter.start("go")
    w.waiter.start(name="go", timeout=1.0)
    assert Job.objects.count() == 2


def test_get_handle_and_unknown_ids() -> None:
    handle = a.add.start(1, 2)
    assert hm.get_handle(handle.id).status() == JobStatus.READY
    with pytest.raises(hm.JobNotFound):
        hm.get_handle("nope")
    with pytest.raises(hm.JobNotFound):
        hm.JobHandle("nope").status()


def test_retries_until_success_with_attempts_journaled(worker: InProcessWorker) -> None:
    handle = a.fail_times.start("ft", 2)
    assert handle.result(timeout=30) == 3
    step = Activity.objects.get(job__workflow_id=handle.id)
    assert step.attempts == 3
    events = [(e["event"], e["attempt"]) for e in handle.journal()]
    assert events == [
        ("created", None),
        ("step_retried", 1),
        ("step_retried", 2),
        ("step_completed", 3),
        ("completed", None),
    ]


def test_retry_is_row_state_with_backoff(worker: InProcessWorker) -> None:
    handle = a.fail_times.using(workflow_id="backoff").start("bo", 1)
    handle.result(timeout=30)
    retried = Journal.objects.get(job__workflow_id="backoff", event="step_retried")
    assert retried.data["delay"] == pytest.approx(0.05)
    assert retried.data["error"]["type"] == "ValueError"


def test_exhausted_retries_fail_the_job_with_error_and_traceback(worker: InProcessWorker) -> None:
    handle = a.always_fail.start("boom")
    with pytest.raises(hm.WorkflowFailed) as info:
        handle.result(timeout=30)
    assert info.value.type == "ValueError" and info.value.message == "boom"
    job = Job.objects.get(workflow_id=handle.id)
    assert job.status == JobStatus.FAILED
    assert "Traceback" in job.error["traceback"] and "always_fail" in job.error["traceback"]
    assert Counter.objects.get(key="always_fail:boom").value == 3


@pytest.mark.parametrize(
    ("definition", "key"), [(a.refuse, "refuse"), (a.lookup_fails, "lookup_fails")]
)
def test_non_retryable_errors_fail_at_once(
    worker: InProcessWorker, definition: Any, key: str
) -> None:
    with pytest.raises(hm.WorkflowFailed):
        definition.start().result(timeout=30)
    assert Counter.objects.get(key=key).value == 1


def test_result_that_is_not_json_fails_without_retry(worker: InProcessWorker) -> None:
    with pytest.raises(hm.WorkflowFailed, match="not JSON serializable"):
        a.bad_result.start().result(timeout=30)
    assert Activity.objects.get().attempts == 1


def test_system_exit_in_user_code_is_a_failure_not_a_dead_worker(worker: InProcessWorker) -> None:
    with pytest.raises(hm.WorkflowFailed) as info:
        a.exits.start().result(timeout=30)
    assert info.value.type == "SystemExit"
    assert a.add.start(1, 1).result(timeout=30) == 2  # the worker is still alive


def test_timed_out_attempt_is_retried_and_its_late_result_dropped(worker: InProcessWorker) -> None:
    handle = a.sleepy.start(1.5, "sl")
    assert handle.result(timeout=30) == "call 2"
    events = [(e["event"], e["attempt"]) for e in handle.journal()]
    assert ("step_retried", 1) in events and ("step_completed", 2) in events
    retried = Journal.objects.get(job__workflow_id=handle.id, event="step_retried")
    assert retried.data["error"]["type"] == "ActivityTimeout"


def test_atomic_attempt_past_its_timeout_fails_and_rolls_back(worker: InProcessWorker) -> None:
    """An atomic activity cannot run in a helper thread (its writes share the ack's
    transaction): its timeout once did nothing. An attempt that overran it now fails
    as ActivityTimeout, its writes rolled back, and the retry succeeds."""
    from tests.models import Effect

    handle = a.slow_effect.start("atomic-slow", 0.6)
    assert handle.result(timeout=30) == "atomic-slow"
    assert Effect.objects.filter(key="atomic-slow").count() == 1
    retried = Journal.objects.get(job__workflow_id=handle.id, event="step_retried")
    assert retried.data["error"]["type"] == "ActivityTimeout"


def test_a_stopping_worker_shows_as_draining_until_it_is_gone(start_worker: Any) -> None:
    """The roll-call's paused flag (the admin's "draining") was never written."""
    from hotmesh_django.models import Worker as WorkerRow
    from tests.conftest import wait_until

    worker = start_worker()
    handle = a.slow.start(1.0, "draining")
    wait_until(lambda: handle.status() == JobStatus.RUNNING)
    assert not WorkerRow.objects.get().paused
    stopper = threading.Thread(target=worker.stop)
    stopper.start()
    wait_until(lambda: WorkerRow.objects.filter(paused=True).exists())
    assert handle.status() == JobStatus.RUNNING  # it finishes what it holds
    stopper.join()
    assert handle.status() == JobStatus.SUCCESSFUL
    assert not WorkerRow.objects.exists()


def test_unknown_activity_fails_the_job_and_the_worker_keeps_going(worker: InProcessWorker) -> None:
    handle = a.add.start(1, 1)
    handle.result(timeout=30)
    job = Job.objects.create(workflow_id="ghost", name="gone.activity", kind="ACTIVITY")
    Activity.objects.create(job=job, seq=1, name="gone.activity", input={"args": [], "kwargs": {}})
    Stream.objects.create(
        queue="default",
        kind="TASK",
        job=job,
        step=1,
        name="gone.activity",
        payload={"args": [], "kwargs": {}},
    )
    with pytest.raises(hm.WorkflowFailed, match="Unknown activity 'gone.activity'"):
        hm.get_handle("ghost").result(timeout=30)
    assert a.add.start(2, 2).result(timeout=30) == 4


def test_garbage_payload_fails_the_job_clearly(worker: InProcessWorker) -> None:
    job = Job.objects.create(workflow_id="garbage", name="t.add", kind="ACTIVITY")
    Activity.objects.create(job=job, seq=1, name="t.add")
    Stream.objects.create(
        queue="default", kind="TASK", job=job, step=1, name="t.add", payload={"args": "not a list"}
    )
    with pytest.raises(hm.WorkflowFailed, match="Malformed call payload"):
        hm.get_handle("garbage").result(timeout=30)


def test_result_timeout_raises_timeout_error() -> None:
    handle = a.add.start(1, 1)  # no worker
    with pytest.raises(TimeoutError):
        handle.result(timeout=0.3)


def test_cancel_a_ready_job() -> None:
    handle = a.add.start(1, 1)
    assert handle.cancel() is True
    assert handle.status() == JobStatus.CANCELLED
    assert not Stream.objects.exists()
    assert handle.cancel() is False
    with pytest.raises(hm.JobCancelled):
        handle.result(timeout=1)


def test_delay_and_priority(start_worker: Any) -> None:
    late = a.echo.using(delay=0.5).start("late")
    low = a.echo.using(priority=-1).start("low")
    high = a.echo.using(priority=10).start("high")
    start_worker(concurrency=1)
    assert high.result(timeout=30) == "high" and low.result(timeout=30) == "low"
    assert late.result(timeout=30) == "late"
    order = list(Job.objects.order_by("started_at").values_list("workflow_id", flat=True))
    assert order == [high.id, low.id, late.id]
    late_job = Job.objects.get(workflow_id=late.id)
    assert (late_job.started_at - late_job.created_at).total_seconds() >= 0.45


def test_run_at_holds_a_job_back(worker: InProcessWorker) -> None:
    from django.utils import timezone

    when = timezone.now() + datetime.timedelta(seconds=0.5)
    handle = a.echo.using(run_at=when).start("later")
    assert handle.result(timeout=30) == "later"
    assert Job.objects.get(workflow_id=handle.id).started_at >= when


def test_run_at_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware datetime"):
        a.echo.using(run_at=datetime.datetime(2030, 1, 1))


def test_poll_only_mode_needs_no_listen_anywhere() -> None:
    """HOTMESH_LISTEN = False (PgBouncer in transaction mode): the worker and
    handle.result() poll; no session LISTENs."""
    with override_settings(HOTMESH_LISTEN=False), WorkerThread(concurrency=2) as thread:
        handles = [a.add.start(i, 1) for i in range(5)]
        assert [h.result(timeout=10) for h in handles] == [1, 2, 3, 4, 5]
        assert thread.worker.listen is False
        assert not [t for t in threading.enumerate() if t.name == "hotmesh-listen"]
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND query ILIKE 'LISTEN%%'"
            )
            assert cursor.fetchone() == (0,)
    # Watching is a LISTEN feature: nothing was marked for a finish NOTIFY.
    assert not Job.objects.filter(watched=True).exists()


@pytest.mark.parametrize("kind", ["job", "workflow"])
def test_an_atomic_step_is_stamped_when_it_ends_not_when_its_transaction_began(
    worker: InProcessWorker, kind: str
) -> None:
    # The ack runs in the step's own transaction, begun before the body ran: now()
    # there is that beginning, so the step, the job and the journal said 0.0 s.
    start = a.slow_atomic.start if kind == "job" else w.one_slow_atomic.start
    handle = start(0.4)
    assert handle.result(timeout=30) == 0.4
    step = Activity.objects.get(job__workflow_id=handle.id, name="t.slow_atomic")
    assert step.started_at is not None and step.finished_at is not None
    assert (step.finished_at - step.started_at).total_seconds() >= 0.4
    job = Job.objects.get(workflow_id=handle.id)
    assert job.finished_at is not None and job.finished_at >= step.finished_at
    done = Journal.objects.get(job=job, event="step_completed")
    assert done.created_at >= step.finished_at
