"""Turns of one job that meet at its row lock.

Under READ COMMITTED a statement that waits for a row lock sees the newest version
of that row but every other row as of its own start. A turn queued behind another
one must still replay from the steps that one recorded, or it undoes its work.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, connections, transaction

import hotmesh_django as hm
from hotmesh_django.engine.claim import Claimed, claim
from hotmesh_django.engine.complete import enqueue_turn
from hotmesh_django.engine.execute import ack_success
from hotmesh_django.engine.turn import Local, run_turn
from hotmesh_django.handles import JobHandle
from hotmesh_django.models import JobStatus, Stream
from tests import activities as a

pytestmark = pytest.mark.django_db(transaction=True)


@hm.workflow(name="t.races.step_then_signal")
def step_then_signal() -> list[Any]:
    return [a.add(1, 1), hm.wait_for_signal("go")]


def _local(worker_id: uuid.UUID) -> Local:
    return Local(worker_id=worker_id, queues=None, lease_seconds=60)


def _claim_one(worker_id: uuid.UUID, kind: str) -> Claimed:
    (message,) = claim(queue="default", worker_id=worker_id, limit=1, lease_seconds=60)
    assert message.kind == kind
    return message


def _in_thread(target: Callable[[], Any], errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _holding(
    work: Callable[[], bool], errors: list[BaseException]
) -> tuple[threading.Thread, threading.Event]:
    """Run `work` (which must return True) in a transaction on another thread and hold
    that transaction open, with its row locks, until the returned event is set."""
    done, release = threading.Event(), threading.Event()

    def hold() -> None:
        with transaction.atomic():
            assert work()
            done.set()
            release.wait(10)

    thread = _in_thread(hold, errors)
    assert done.wait(10), errors
    return thread, release


def _wait_until_blocked_on_a_lock(timeout: float = 10.0) -> None:
    """Until some other session of this database waits for a row lock."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.01)
    raise AssertionError("no session ever waited for the job's row lock")


def _job_step_done_while_a_turn_waits() -> tuple[JobHandle, uuid.UUID, Claimed, Claimed]:
    """A job whose step 1 is claimed, with a second turn of it claimed too."""
    worker_id = uuid.uuid4()
    handle = step_then_signal.start()
    first = _claim_one(worker_id, "TURN")
    step = run_turn(first, _local(worker_id))  # the worker takes the step it queued
    assert step is not None and step.kind == "STEP"
    enqueue_turn(step.job_id)  # as a signal or an operator's retry queues one
    turn = _claim_one(worker_id, "TURN")
    return handle, worker_id, step, turn


def test_a_turn_that_waited_for_the_lock_replays_the_steps_recorded_meanwhile() -> None:
    handle, worker_id, step, turn = _job_step_done_while_a_turn_waits()
    job_id = step.job_id
    errors: list[BaseException] = []
    # The step's ack locks the job and runs the next turn inline (the job now waits
    # for its signal), and holds the transaction open.
    holder, release = _holding(
        lambda: ack_success(step, _local(worker_id), 2) == (True, None), errors
    )
    waiter = _in_thread(lambda: run_turn(turn, _local(worker_id)), errors)
    _wait_until_blocked_on_a_lock()  # its snapshot predates the ack's commit
    release.set()
    holder.join(10)
    waiter.join(10)
    assert not errors

    assert handle.status() == JobStatus.WAITING
    assert not Stream.objects.filter(job_id=job_id).exists()
    hm.signal(handle.id, "go", "on")
    _drain(worker_id)
    assert handle.result(timeout=5) == [2, "on"]


def test_an_ack_that_finds_the_job_locked_by_a_turn_queues_one_of_its_own() -> None:
    handle, worker_id, step, turn = _job_step_done_while_a_turn_waits()
    job_id = step.job_id
    errors: list[BaseException] = []
    holder, release = _holding(lambda: run_turn(turn, _local(worker_id)) is None, errors)
    # The ack's SKIP LOCKED passes the job over while the turn holds it, so it
    # queues a turn of its own: the job is never left without one.
    assert ack_success(step, _local(worker_id), 2) == (True, None)
    release.set()
    holder.join(10)
    assert not errors
    assert Stream.objects.filter(job_id=job_id, kind="TURN", status="READY").count() == 1
    _drain(worker_id)
    assert handle.status() == JobStatus.WAITING


def _drain(worker_id: uuid.UUID) -> None:
    """Run the queued turns on this thread (the job has no steps left to run)."""
    while batch := claim(queue="default", worker_id=worker_id, limit=1, lease_seconds=60):
        assert batch[0].kind == "TURN"
        run_turn(batch[0], _local(worker_id))


def test_a_turn_queued_onto_a_ready_one_is_not_claimed_before_it_commits() -> None:
    # A signal (or a step's result) whose turn collapses into one already READY must
    # not let that turn be claimed and replayed before the signal is visible: the
    # replay would miss it and nothing else would be queued for it.
    worker_id = uuid.uuid4()
    handle = step_then_signal.start()
    first = _claim_one(worker_id, "TURN")
    step = run_turn(first, _local(worker_id))
    assert step is not None
    assert ack_success(step, _local(worker_id), 2) == (True, None)
    assert handle.status() == JobStatus.WAITING
    enqueue_turn(step.job_id)  # a READY turn, as an operator's retry queues one
    errors: list[BaseException] = []
    holder, release = _holding(lambda: hm.signal(handle.id, "go", "on") is None, errors)
    assert claim(queue="default", worker_id=worker_id, limit=1, lease_seconds=60) == []
    release.set()
    holder.join(10)
    assert not errors
    _drain(worker_id)
    assert handle.result(timeout=5) == [2, "on"]
