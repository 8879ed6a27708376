"""Batched acks of activity jobs: one statement for many, guarded like a single ack."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from django.db import connections

from hotmesh_django.engine.acks import AckBatcher, ack_tasks
from hotmesh_django.engine.claim import Claimed, claim
from hotmesh_django.models import Activity, Job, JobStatus, Journal, Stream
from tests import activities as t

pytestmark = pytest.mark.django_db(transaction=True)


def _claimed(count: int, worker_id: uuid.UUID) -> list[Claimed]:
    for i in range(count):
        t.add.start(i, 1)
    return claim(queue="default", worker_id=worker_id, limit=count, lease_seconds=60)


def test_one_statement_acks_a_batch_and_finishes_each_job_once() -> None:
    worker_id = uuid.uuid4()
    batch = _claimed(25, worker_id)
    assert len(batch) == 25

    acked, finished = ack_tasks(worker_id, [(m, {"n": m.id}) for m in batch])

    assert acked == {m.id for m in batch}
    assert finished == {m.job_id for m in batch}
    assert not Stream.objects.exists()
    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.SUCCESSFUL}
    for message in batch:
        job = Job.objects.get(pk=message.job_id)
        step = Activity.objects.get(job=job, seq=1)
        assert job.output == step.output == {"n": message.id}
        assert step.status == JobStatus.SUCCESSFUL and step.attempts == 1
        events = list(Journal.objects.filter(job=job).values_list("event", flat=True))
        assert events.count("step_completed") == 1 and events.count("completed") == 1


def test_a_lost_lease_is_left_alone_and_the_rest_are_acked() -> None:
    worker_id = uuid.uuid4()
    lost, *kept = _claimed(5, worker_id)
    # Rescued and re-claimed by another worker meanwhile.
    Stream.objects.filter(pk=lost.id).update(worker=uuid.uuid4())

    acked, finished = ack_tasks(worker_id, [(m, None) for m in (lost, *kept)])

    assert acked == {m.id for m in kept}
    assert lost.job_id not in finished
    assert Job.objects.get(pk=lost.job_id).status == JobStatus.RUNNING
    assert Stream.objects.filter(pk=lost.id, status="RUNNING").exists()


def test_one_bad_row_does_not_sink_the_batch() -> None:
    worker_id = uuid.uuid4()
    bad, *good = _claimed(4, worker_id)
    done: list[tuple[int, bool]] = []
    batcher = AckBatcher(worker_id=worker_id, on_done=lambda m, ok: done.append((m.id, ok)))

    # PostgreSQL's jsonb refuses a NUL character: the batch statement fails, and the
    # batcher falls back to one statement per ack.
    batcher._flush([(bad, "nul \x00 inside"), *((m, 7) for m in good)])
    connections.close_all()

    assert sorted(done) == sorted([(bad.id, False), *((m.id, True) for m in good)])
    assert Job.objects.filter(pk__in=[m.job_id for m in good], status="SUCCESSFUL").count() == 3
    assert Stream.objects.filter(pk=bad.id, status="RUNNING").exists()  # left to the rescue


def test_the_batcher_thread_acks_what_runners_hand_it_and_drains_on_close() -> None:
    worker_id = uuid.uuid4()
    batch = _claimed(60, worker_id)
    done: list[int] = []
    lock = threading.Lock()

    def on_done(message: Claimed, ok: bool) -> None:
        assert ok
        with lock:
            done.append(message.id)

    batcher = AckBatcher(worker_id=worker_id, on_done=on_done, max_batch=20).start()
    for message in batch:
        batcher.submit(message, message.id)
    batcher.close(timeout=30)

    assert sorted(done) == sorted(m.id for m in batch)
    assert batcher.batches <= 60
    assert Job.objects.filter(status="SUCCESSFUL").count() == 60


def test_a_worker_finishes_activity_jobs_through_the_batcher(worker: Any) -> None:
    handles = [t.add.start(i, i) for i in range(40)]
    assert [h.result(timeout=30) for h in handles] == [2 * i for i in range(40)]
    assert worker.worker._acks is not None and worker.worker._acks.batches >= 1
    assert worker.worker.in_flight == 0
    assert not worker.worker._held
    assert Journal.objects.filter(event="completed").count() == 40
