"""Hand-edited and corrupted rows, and user code that misbehaves.

Each case ends with a clear error on the job, the worker still running (it runs a
job afterwards), and nothing else lost.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import IntegrityError, transaction

import hotmesh_django as hm
from hotmesh_django.models import Activity, Job, JobStatus, Journal, Stream
from hotmesh_django.testing import WorkerThread
from tests import activities as a
from tests import workflows as w
from tests.conftest import wait_until
from tests.integration import kit_defs as k

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker() -> Iterator[WorkerThread]:
    k.RELEASE.clear()
    with WorkerThread(concurrency=1) as thread:
        yield thread
        # Alive and well: one slot, and it still runs a fresh job.
        assert a.add.start(20, 22).result(timeout=10) == 42
        assert thread.is_alive()
    k.RELEASE.set()


def _failure(handle: hm.JobHandle) -> hm.WorkflowFailed:
    with pytest.raises(hm.WorkflowFailed) as info:
        handle.result(timeout=15)
    return info.value


def _waiting(handle: hm.JobHandle) -> None:
    with WorkerThread():
        wait_until(lambda: handle.status() == JobStatus.WAITING, timeout=15)


def test_garbage_step_payload_fails_the_job_clearly(worker: WorkerThread) -> None:
    with transaction.atomic():
        handle = a.add.start(1, 2)
        Stream.objects.filter(job__workflow_id=handle.id).update(payload="not a call")
    error = _failure(handle)
    assert "Malformed call payload" in error.message


def test_garbage_workflow_input_fails_the_job_clearly(worker: WorkerThread) -> None:
    with transaction.atomic():
        handle = w.three_steps.start(1)
        Job.objects.filter(workflow_id=handle.id).update(input=[1, 2])
    assert "Malformed call payload" in _failure(handle).message


# Postgres takes JSON nested far deeper than Python's json module can decode.
_DEEP = '{"args": [' + "[" * 5000 + "]" * 5000 + '], "kwargs": {}}'


def _set_json(table: type[Job] | type[Stream] | type[Activity], column: str, **where: int) -> None:
    from django.db import connection

    [(key, value)] = where.items()
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table._meta.db_table} SET {column} = %s::jsonb WHERE {key} = %s",
            [_DEEP, value],
        )


def test_a_payload_nested_too_deeply_to_decode_fails_its_job(worker: WorkerThread) -> None:
    with transaction.atomic():
        handle = a.add.start(1, 2)
        _set_json(Stream, "payload", job_id=handle.job().pk)
    assert "Malformed call payload" in _failure(handle).message
    assert "nested too deeply" in _failure(handle).message


def test_a_workflow_input_nested_too_deeply_to_decode_fails_its_job(
    worker: WorkerThread,
) -> None:
    with transaction.atomic():
        handle = w.three_steps.start(1)
        _set_json(Job, "input", id=handle.job().pk)
    assert "nested too deeply" in _failure(handle).message


def test_a_step_output_nested_too_deeply_to_decode_fails_its_job(worker: WorkerThread) -> None:
    handle = w.two_signals.start()
    handle.signal("go", 1)
    wait_until(
        lambda: Activity.objects.filter(job__workflow_id=handle.id, status="SUCCESSFUL").exists(),
        timeout=15,
    )
    step = Activity.objects.get(job__workflow_id=handle.id, status="SUCCESSFUL")
    _set_json(Activity, "output", id=step.pk)
    handle.signal("go", 2)
    assert "nested too deeply" in _failure(handle).message


def test_unknown_kinds_and_events_are_refused_by_the_database() -> None:
    handle = w.three_steps.start(1)
    job = handle.job()
    with pytest.raises(IntegrityError), transaction.atomic():
        Stream.objects.filter(job=job).update(kind="BOMB")
    with pytest.raises(IntegrityError), transaction.atomic():
        Stream.objects.filter(job=job).update(status="SOMETIME")
    with pytest.raises(IntegrityError), transaction.atomic():
        Activity.objects.create(job=job, seq=9, kind="TELEPORT", name="x", status="READY")
    with pytest.raises(IntegrityError), transaction.atomic():
        Job.objects.filter(pk=job.pk).update(status="HALF_DONE")


def test_an_unknown_journal_event_is_refused_by_the_database() -> None:
    job = w.three_steps.start(1).job()
    with pytest.raises(IntegrityError), transaction.atomic():
        Journal.objects.create(job=job, event="exploded")


def test_a_corrupted_recorded_output_fails_the_job_clearly(worker: WorkerThread) -> None:
    handle = w.changes.start()
    _waiting(handle)
    Activity.objects.filter(job__workflow_id=handle.id, seq=1).update(
        output={"__hm__": "martian", "v": 1}
    )
    handle.signal("continue")
    error = _failure(handle)
    assert (error.type, "Unknown value tag 'martian'" in error.message) == ("ValueError", True)


def test_an_activity_renamed_under_running_jobs_fails_them_clearly(worker: WorkerThread) -> None:
    with transaction.atomic():
        handle = a.add.start(1, 2)
        Stream.objects.filter(job__workflow_id=handle.id).update(name="t.add_v2")
    error = _failure(handle)
    assert "Unknown activity 't.add_v2'" in error.message


def test_a_renamed_step_in_the_journal_is_nondeterminism(worker: WorkerThread) -> None:
    handle = w.changes.start()
    _waiting(handle)
    Activity.objects.filter(job__workflow_id=handle.id, seq=1).update(name="t.add_old")
    handle.signal("continue")
    error = _failure(handle)
    assert error.type == "NonDeterminismError"
    assert "recorded activity 't.add_old' but the code now calls activity 't.add'" in (
        error.message
    )


def test_a_workflow_renamed_under_a_running_job_is_parked(worker: WorkerThread) -> None:
    with transaction.atomic():
        handle = w.three_steps.start(1)
        Job.objects.filter(workflow_id=handle.id).update(name="t.gone")
        Stream.objects.filter(job__workflow_id=handle.id).update(name="t.gone")
    wait_until(lambda: handle.job().error is not None, timeout=10)
    job = handle.job()
    assert job.status == JobStatus.WAITING
    assert job.error["type"] == "UnknownWorkflow"
    assert Stream.objects.filter(job=job, status="SCHEDULED").exists()  # looked at again


def test_a_parked_job_keeps_one_timer_however_often_it_is_signalled(
    worker: WorkerThread,
) -> None:
    handle = w.waiter.start("go")
    wait_until(lambda: handle.status() == JobStatus.WAITING, timeout=10)
    Job.objects.filter(workflow_id=handle.id).update(name="t.gone")
    turns = Stream.objects.filter(job__workflow_id=handle.id, kind="TURN")
    for i in range(3):
        handle.signal("ping", i)  # queues a turn, which parks the job again
        wait_until(lambda: not turns.exists(), timeout=10)
    job = handle.job()
    assert job.error["type"] == "UnknownWorkflow"  # was left unset: WAITING to WAITING
    assert Journal.objects.filter(job=job, event="parked").count() == 1
    assert Stream.objects.filter(job=job, kind="TIMER").count() == 1
    # The code is back (a deploy): the next signal's turn goes on from where it was.
    Job.objects.filter(pk=job.pk).update(name="t.waiter")
    handle.signal("go", "back")
    assert handle.result(timeout=10) == "back"


def test_a_deleted_step_row_fails_the_job_instead_of_rerunning(worker: WorkerThread) -> None:
    handle = w.changes.start()
    _waiting(handle)
    Activity.objects.filter(job__workflow_id=handle.id, seq=1).delete()
    handle.signal("continue")
    wait_until(lambda: handle.status() != JobStatus.WAITING or _completions(handle) > 1, 10)
    assert _completions(handle) == 1
    assert handle.status() == JobStatus.FAILED
    error = _failure(handle)
    assert error.type == "NonDeterminismError"
    assert "no row for step(s) 1 (deleted by hand?)" in error.message


def _completions(handle: hm.JobHandle) -> int:
    return Journal.objects.filter(
        job__workflow_id=handle.id, event="step_completed", step=1
    ).count()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("interrupts", "KeyboardInterrupt: "),
        ("exits", "SystemExit: asked to exit"),
        ("never_returns", "ActivityTimeout: The activity ran longer than its timeout of 0.5 s."),
    ],
)
def test_misbehaving_activities_fail_their_step(
    worker: WorkerThread, name: str, expected: str
) -> None:
    assert k.calls.start(name).result(timeout=15) == expected


@pytest.mark.parametrize(
    ("definition", "error_type"),
    [(k.workflow_interrupts, "KeyboardInterrupt"), (k.workflow_exits, "SystemExit")],
)
def test_misbehaving_workflows_fail_the_job(
    worker: WorkerThread, definition: hm.WorkflowDefinition[[], None], error_type: str
) -> None:
    assert _failure(definition.start()).type == error_type


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("nul", "bad\\x00byte"),
        ("surrogate", "bad\\ud800half"),
        ("str", "<_Unprintable whose str() raised>"),
    ],
)
def test_an_error_postgres_cannot_store_as_it_is_is_escaped_not_lost(
    worker: WorkerThread, kind: str, message: str
) -> None:
    failed = _failure(a.unstorable_error.start(kind))
    assert (failed.type, failed.message) == (
        "ValueError" if kind != "str" else "_Unprintable",
        message,
    )
    caught = w.catches_unstorable.start(kind).result(timeout=15)
    assert caught.endswith(message)
    flow = _failure(w.raises_unstorable.start())
    assert (flow.type, flow.message) == ("ValueError", "wf\\x00nul")
