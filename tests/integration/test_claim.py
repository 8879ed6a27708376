"""The claim: SKIP LOCKED from many connections, lock semantics, index use, rescue."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest
from django.db import connection, connections, transaction

from hotmesh_django.engine.acks import ack_tasks
from hotmesh_django.engine.claim import (
    claim,
    claim_ids,
    ready_exists,
    requeue_expired,
    rescue,
)
from hotmesh_django.engine.execute import _ack_task, _release_uncounted, ack_failure, ack_retry
from hotmesh_django.engine.notify import connect_raw
from hotmesh_django.models import Activity, Job, JobStatus, Journal, Queue, Stream, Worker
from tests.factories import JobFactory, StreamFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _messages(count: int, queue: str = "default") -> list[Stream]:
    jobs = Job.objects.bulk_create(
        [Job(workflow_id=f"{queue}-{i}", name="t.add", kind="ACTIVITY") for i in range(count)]
    )
    return Stream.objects.bulk_create(
        [Stream(queue=queue, kind="TASK", job=j, step=1, name="t.add") for j in jobs]
    )


def test_concurrent_claimers_never_share_a_message() -> None:
    _messages(300)
    barrier = threading.Barrier(8)
    seen: list[list[int]] = [[] for _ in range(8)]

    def claimer(slot: int) -> None:
        try:
            barrier.wait()
            worker_id = uuid.uuid4()
            while batch := claim(queue="default", worker_id=worker_id, limit=7, lease_seconds=60):
                seen[slot].extend(m.id for m in batch)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    claimed = [i for ids in seen for i in ids]
    assert len(claimed) == len(set(claimed)) == 300
    assert Stream.objects.filter(status="RUNNING", attempts=1).count() == 300
    assert sum(1 for ids in seen if ids) > 1  # the work really was shared


def test_claim_skips_rows_locked_by_another_connection() -> None:
    first, second = _messages(2)
    with connect_raw() as other:
        other.execute("BEGIN")
        other.execute(
            f"SELECT id FROM {Stream._meta.db_table} WHERE id = %s FOR UPDATE", [first.id]
        )
        got = claim(queue="default", worker_id=uuid.uuid4(), limit=5, lease_seconds=60)
        other.execute("ROLLBACK")
    assert [m.id for m in got] == [second.id]


def test_claim_orders_by_priority_then_fifo_and_respects_queue() -> None:
    jobs = JobFactory.create_batch(4)
    low = StreamFactory(job=jobs[0], priority=0)
    high = StreamFactory(job=jobs[1], priority=5)
    low2 = StreamFactory(job=jobs[2], priority=0)
    StreamFactory(job=jobs[3], queue="elsewhere", priority=99)
    got = claim(queue="default", worker_id=uuid.uuid4(), limit=10, lease_seconds=60)
    assert sorted(m.id for m in got) == sorted([high.id, low.id, low2.id])
    ordered = list(Stream.objects.filter(queue="default").order_by("-priority", "id"))
    assert [m.id for m in ordered] == [high.id, low.id, low2.id]


def test_claim_marks_the_activity_job_running() -> None:
    job = Job.objects.create(workflow_id="x", name="t.add", kind="ACTIVITY")
    Activity.objects.create(job=job, seq=1, name="t.add")
    Stream.objects.create(queue="default", kind="TASK", job=job, step=1, name="t.add")
    claim(queue="default", worker_id=uuid.uuid4(), limit=1, lease_seconds=60)
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and job.started_at
    assert Activity.objects.get().status == JobStatus.RUNNING


def test_claim_uses_the_partial_ready_index() -> None:
    _messages(3000)
    _messages(2000, queue="other")
    Stream.objects.filter(id__in=Stream.objects.values("id")[:1500]).update(status="RUNNING")
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Stream._meta.db_table}")
        cursor.execute(
            f"EXPLAIN SELECT id FROM {Stream._meta.db_table} "
            "WHERE queue = %s AND status = 'READY' ORDER BY priority DESC, id LIMIT 10 "
            "FOR UPDATE SKIP LOCKED",
            ["default"],
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "hotmesh_stream_ready_idx" in plan, plan
    assert "Sort" not in plan, plan


def test_expired_leases_are_requeued_with_the_attempt_counted() -> None:
    job = Job.objects.create(workflow_id="x", name="t.add", kind="ACTIVITY")
    Activity.objects.create(job=job, seq=1, name="t.add")
    Stream.objects.create(queue="default", kind="TASK", job=job, step=1, name="t.add")
    (message,) = claim(queue="default", worker_id=uuid.uuid4(), limit=1, lease_seconds=0.01)
    assert message.attempts == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0.05)")
    assert rescue(stale_seconds=60) == 1
    row = Stream.objects.get()
    assert (row.status, row.worker, row.attempts) == ("READY", None, 1)
    assert Job.objects.get().status == JobStatus.READY
    assert Journal.objects.get().event == "lease_expired"
    (again,) = claim(queue="default", worker_id=uuid.uuid4(), limit=1, lease_seconds=60)
    assert again.attempts == 2


def test_rescue_forgets_silent_workers_and_frees_their_turns() -> None:
    dead = Worker.objects.create(host="h", pid=1)
    Worker.objects.filter(pk=dead.pk).update(last_seen="2000-01-01T00:00:00Z")
    job = Job.objects.create(workflow_id="wf", name="t.three_steps")
    Stream.objects.create(
        queue="default",
        kind="TURN",
        job=job,
        status="RUNNING",
        worker=dead.id,
        lease_expires_at="2999-01-01T00:00:00Z",
    )
    assert rescue(stale_seconds=30) == 1
    assert not Worker.objects.exists()
    turn = Stream.objects.get()
    assert (turn.kind, turn.status, turn.worker) == ("TURN", "READY", None)


def test_rescue_judges_a_worker_silent_by_its_own_settings_not_the_rescuers() -> None:
    """A rescuer with a short lease and heartbeat must not take a worker that beats
    every 5 s (and promised to be seen within 30) for dead 10 s after its last beat:
    that re-ran a live worker's activity while it was still running."""
    alive = Worker.objects.create(host="h", pid=1, stale_seconds=30)
    gone = Worker.objects.create(host="h", pid=2, stale_seconds=30)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Worker._meta.db_table} SET last_seen = now() - "
            "CASE WHEN id = %s THEN interval '10 seconds' ELSE interval '31 seconds' END",
            [alive.id],
        )
    for n, worker in enumerate((alive, gone)):
        job = Job.objects.create(workflow_id=f"wf{n}", name="t.add", kind="ACTIVITY")
        Activity.objects.create(job=job, seq=1, name="t.add", status="RUNNING")
        Stream.objects.create(
            queue="default",
            kind="TASK",
            job=job,
            step=1,
            name="t.add",
            status="RUNNING",
            worker=worker.id,
            lease_expires_at="2999-01-01T00:00:00Z",
        )
    assert rescue(stale_seconds=3) == 1
    assert list(Worker.objects.values_list("id", flat=True)) == [alive.id]
    assert Stream.objects.get(worker=alive.id).status == "RUNNING"
    assert Stream.objects.get(job__workflow_id="wf1").status == "READY"


def test_a_worker_row_says_how_long_it_may_stay_silent(settings: Any) -> None:
    from hotmesh_django.worker import Worker as Runner

    settings.HOTMESH_LEASE_SECONDS = 12
    settings.HOTMESH_HEARTBEAT_SECONDS = 5
    runner = Runner(queues=["default"])
    runner._register()
    assert Worker.objects.get(id=runner.id).stale_seconds == 15
    settings.HOTMESH_LEASE_SECONDS = 40
    runner._beat()
    assert Worker.objects.get(id=runner.id).stale_seconds == 40


def _claimed_twice_by(worker: uuid.UUID) -> tuple[Any, Any]:
    """One activity job's message claimed by `worker`, rescued when its lease ran
    out, and claimed again by the same worker: (first attempt, second attempt)."""
    job = Job.objects.create(workflow_id="again", name="t.add", kind="ACTIVITY")
    Activity.objects.create(job=job, seq=1, name="t.add")
    Stream.objects.create(queue="default", kind="TASK", job=job, step=1, name="t.add")
    (first,) = claim(queue="default", worker_id=worker, limit=1, lease_seconds=0.01)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0.05)")
    assert rescue(stale_seconds=60) == 1
    (second,) = claim(queue="default", worker_id=worker, limit=1, lease_seconds=60)
    assert (first.id, first.attempts, second.attempts) == (second.id, 1, 2)
    return first, second


@pytest.mark.parametrize(
    "late_ack",
    [
        lambda m, w: _ack_task(m, w, "late"),
        lambda m, w: bool(ack_tasks(w, [(m, "late")])[0]),
        lambda m, w: ack_retry(m, w, {"type": "E", "message": "late"}, 1.0),
        lambda m, w: ack_failure(m, w, {"type": "E", "message": "late"}),
        lambda m, w: _release_uncounted(m, w, RuntimeError("late")) or False,
    ],
    ids=["ack", "ack batch", "retry", "failure", "release"],
)
def test_an_earlier_attempts_outcome_moves_nothing_once_the_message_is_claimed_again(
    late_ack: Any,
) -> None:
    """A worker cut off from the database for longer than its lease is rescued; once
    back, it may claim the same message again (same id, same worker) while the first
    attempt's body still runs. That attempt's outcome must not be taken for the
    second's: every guard names the attempt too."""
    me = uuid.uuid4()
    first, second = _claimed_twice_by(me)
    assert not late_ack(first, me)
    row = Stream.objects.get()
    assert (row.status, row.worker, row.attempts) == ("RUNNING", me, 2)
    assert _ack_task(second, me, "mine")
    step = Activity.objects.get()
    assert (step.status, step.output, step.attempts) == ("SUCCESSFUL", "mine", 2)
    assert Job.objects.get().output == "mine"


def test_rescue_runs_in_one_worker_at_a_time() -> None:
    with connect_raw() as other:
        other.execute("BEGIN")
        other.execute("SELECT pg_advisory_xact_lock(%s)", [0x686F746D657368])
        assert rescue(stale_seconds=30) == 0
        other.execute("ROLLBACK")


def test_releasing_my_leases_on_shutdown() -> None:
    _messages(3)
    me = uuid.uuid4()
    claim(queue="default", worker_id=me, limit=3, lease_seconds=600)
    with transaction.atomic():
        assert requeue_expired(workers=[me]) == 3
    assert Stream.objects.filter(status="READY").count() == 3


def test_ready_work_held_by_another_transaction_is_skipped_but_still_seen() -> None:
    """What a burst worker checks before it exits: an empty claim is not an empty queue."""
    (message,) = _messages(1, queue="burst")
    assert ready_exists(queues=["burst"], excluded=[])
    assert ready_exists(queues=None, excluded=[])
    assert not ready_exists(queues=["other"], excluded=[])
    assert not ready_exists(queues=None, excluded=["burst"])  # a paused queue does not count
    with connect_raw() as other:
        other.execute("BEGIN")
        other.execute("SELECT id FROM hotmesh_django_stream WHERE id = %s FOR UPDATE", [message.id])
        assert claim(queue="burst", worker_id=uuid.uuid4(), limit=1, lease_seconds=60) == []
        assert ready_exists(queues=["burst"], excluded=[])
        other.execute("ROLLBACK")


def test_a_batch_comes_back_highest_priority_first() -> None:
    """Runners take a batch in the order the claim returns it, so that order is the
    queue's: priority first, then age (not the message ids alone)."""
    low, mid, high = _messages(3)
    Stream.objects.filter(pk=low.pk).update(priority=-100)
    Stream.objects.filter(pk=high.pk).update(priority=100)
    batch = claim(queue="default", worker_id=uuid.uuid4(), limit=3, lease_seconds=60)
    assert [m.id for m in batch] == [high.id, mid.id, low.id]


def test_a_paused_queue_claims_nothing_whatever_the_worker_believes() -> None:
    """The claim reads the pause itself: a worker whose paused set predates the pause
    (read just before it committed) still claims nothing that was enqueued after."""
    _messages(2, queue="held")
    Queue.objects.create(name="held", paused=True)
    assert claim(queue="held", worker_id=uuid.uuid4(), limit=5, lease_seconds=60) == []
    ids = list(Stream.objects.values_list("id", flat=True))
    assert claim_ids(ids=ids, worker_id=uuid.uuid4(), lease_seconds=60) == []
    assert Stream.objects.filter(status="READY").count() == 2
    Queue.objects.filter(name="held").update(paused=False)
    assert len(claim(queue="held", worker_id=uuid.uuid4(), limit=5, lease_seconds=60)) == 2


def _plan_of(call: Any) -> str:
    """The JSON plan of the last statement `call()` runs (rolled back)."""
    captured: list[tuple[str, Any]] = []

    def capture(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        captured.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture), transaction.atomic():
        call()
        transaction.set_rollback(True)
    sql, params = captured[-1]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        raw = cursor.fetchone()[0]
        transaction.set_rollback(True)
    return json.dumps(json.loads(raw) if isinstance(raw, str) else raw)


def test_claims_and_acks_find_their_jobs_by_key_whatever_the_statistics_say() -> None:
    """Statistics lag behind a burst of starts: taken when every job had finished and
    nothing ran, they say no job is READY and no message RUNNING. A claim and an ack
    must still reach each row by its key, not walk every READY job once per row (30 ms
    a claim at 3,000 waiting) or every RUNNING message to find one."""
    Job.objects.bulk_create(
        [
            Job(workflow_id=f"old-{i}", name="t.add", kind="ACTIVITY", status="SUCCESSFUL")
            for i in range(200)
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Job._meta.db_table}")
        cursor.execute(f"ANALYZE {Stream._meta.db_table}")
    _messages(3000)
    worker = uuid.uuid4()
    # (A small table may rightly be hash-joined after a seq scan once autovacuum has
    # analyzed it; what must never happen is a walk of the status index.)
    plan = _plan_of(lambda: claim(queue="default", worker_id=worker, limit=32, lease_seconds=60))
    assert "hotmesh_job_status_idx" not in plan, plan

    batch = claim(queue="default", worker_id=worker, limit=2000, lease_seconds=60)
    plan = _plan_of(lambda: ack_tasks(worker, [(m, None) for m in batch[:32]]))
    assert "hotmesh_job_status_idx" not in plan and "running" not in plan, plan
    # One message by its id, not by scanning the index of every RUNNING one (2,000).
    plan = _plan_of(lambda: _ack_task(batch[0], worker, None))
    assert '"hotmesh_django_stream_pkey"' in plan
    assert "hotmesh_job_status_idx" not in plan and "running" not in plan, plan
