"""A worker whose database session dies under a message gives it back at once."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from django.db import OperationalError, connection, connections, transaction

from hotmesh_django import WorkflowFailed
from hotmesh_django.engine.claim import claim
from hotmesh_django.engine.execute import UNCOUNTED_LOSSES, release_after_loss, session_lost
from hotmesh_django.engine.notify import _connection_lost, connect_raw
from hotmesh_django.models import Activity, Journal, Stream
from tests import activities as t
from tests import workflows as w
from tests.conftest import wait_until
from tests.models import Counter

pytestmark = pytest.mark.django_db(transaction=True)


def _kill_this_session() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    with connect_raw() as other:
        other.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])


def test_a_session_terminated_earlier_is_recognised_as_lost() -> None:
    _kill_this_session()
    with pytest.raises(OperationalError), connection.cursor() as cursor:
        cursor.execute("SELECT 1")  # reads the termination (57P01)
    with pytest.raises(OperationalError) as lost, connection.cursor() as cursor:
        cursor.execute("SELECT 1")  # "the connection is lost": no SQLSTATE at all
    assert session_lost(lost.value)
    with connection.cursor() as cursor:  # and Django reconnects
        cursor.execute("SELECT 1")


def test_an_error_of_a_live_session_is_not_a_lost_session() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = 10")
        with pytest.raises(OperationalError) as error:
            cursor.execute("SELECT pg_sleep(1)")  # cancelled: 57014, the session lives
        cursor.execute("RESET statement_timeout")
    assert not session_lost(error.value)


def test_a_turn_lost_with_its_session_is_queued_again_at_once() -> None:
    handle = w.three_steps.start(1)
    worker_id = uuid.uuid4()
    (turn,) = claim(queue="default", worker_id=worker_id, limit=1, lease_seconds=60)
    assert turn.kind == "TURN"

    release_after_loss(turn, worker_id, OperationalError("server closed the connection"))

    (again,) = Stream.objects.filter(job_id=turn.job_id)
    assert again.id != turn.id and again.kind == "TURN" and again.status == "READY"
    assert handle.status() != "FAILED"


def test_a_step_lost_with_its_session_goes_back_without_counting_the_attempt() -> None:
    t.add.start(2, 3)
    worker_id = uuid.uuid4()
    (step,) = claim(queue="default", worker_id=worker_id, limit=1, lease_seconds=60)

    release_after_loss(step, worker_id, OperationalError("server closed the connection"))

    message = Stream.objects.get(pk=step.id)
    assert (message.status, message.attempts, message.worker) == ("READY", 0, None)
    assert Activity.objects.get(job_id=step.job_id).status == "READY"
    assert Journal.objects.filter(job_id=step.job_id, event="lease_expired").count() == 1


def test_a_message_no_longer_held_is_left_alone() -> None:
    t.add.start(2, 3)
    (step,) = claim(queue="default", worker_id=uuid.uuid4(), limit=1, lease_seconds=60)

    release_after_loss(step, uuid.uuid4(), OperationalError("gone"))  # another worker's

    assert Stream.objects.get(pk=step.id).status == "RUNNING"


def _error_of_another_session() -> OperationalError:
    other = connections.create_connection("default")
    try:
        with pytest.raises(OperationalError) as error, other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    finally:
        other.close()
    return error.value


def test_a_session_ended_code_from_another_session_is_not_this_ones() -> None:
    error = _error_of_another_session()
    assert getattr(error.__cause__, "sqlstate", None) == "57P01"
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")  # this thread's session is open and alive
    assert not session_lost(error)


def test_a_session_ended_code_is_believed_when_this_session_is_gone() -> None:
    error = _error_of_another_session()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    _kill_this_session()  # not yet noticed by psycopg: the probe finds it
    assert session_lost(error)
    with connection.cursor() as cursor:  # and Django reconnects
        cursor.execute("SELECT 1")


def test_an_activity_whose_own_session_ends_is_retried_and_fails(worker: object) -> None:
    handle = t.own_session_killed.start("own-session")
    with pytest.raises(WorkflowFailed, match="terminat"):
        handle.result(timeout=30)
    # Three attempts (FAST's max_attempts), each counted: not an endless uncounted loop.
    assert Counter.objects.get(key="own-session").value == 3
    job = Journal.objects.filter(job__workflow_id=handle.id)
    assert not job.filter(event="lease_expired").exists()
    assert job.filter(event="step_retried").count() == 2


def test_a_step_that_keeps_losing_its_session_is_counted_after_three_releases() -> None:
    t.add.start(2, 3)
    worker_id = uuid.uuid4()
    for _ in range(UNCOUNTED_LOSSES):
        (step,) = claim(queue="default", worker_id=worker_id, limit=1, lease_seconds=60)
        release_after_loss(step, worker_id, OperationalError("server closed the connection"))
        assert Stream.objects.get(pk=step.id).attempts == 0

    (step,) = claim(queue="default", worker_id=worker_id, limit=1, lease_seconds=60)
    release_after_loss(step, worker_id, OperationalError("server closed the connection"))

    message = Stream.objects.get(pk=step.id)
    assert (message.status, message.attempts) == ("SCHEDULED", 1)  # retried with backoff
    events = Journal.objects.filter(job_id=step.job_id).values_list("event", flat=True)
    assert list(events).count("lease_expired") == UNCOUNTED_LOSSES
    assert "step_retried" in events


def _listeners() -> list[int]:
    with connect_raw() as other:
        rows = other.execute(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
            ["%SET watched = true%"],
        ).fetchall()
    return [row[0] for row in rows]


def test_result_outlives_the_loss_of_both_its_connections(worker: object) -> None:
    """It raised the raw OperationalError of its killed session."""
    handle = t.slow.start(1.5, "waited")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        mine = cursor.fetchone()[0]

    def kill() -> None:
        listeners = wait_until(_listeners)
        with connect_raw() as other:
            other.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM unnest(%s) AS pid",
                [[mine, *listeners]],
            )

    killer = threading.Thread(target=kill)
    killer.start()
    assert handle.result(timeout=30) == 1
    killer.join()
    assert _listeners() == []  # the wait's second listener is closed


def test_inside_atomic_a_lost_wait_raises() -> None:
    handle = t.slow.start(5, "atomic-wait")
    with pytest.raises(OperationalError), transaction.atomic():
        Counter.objects.create(key="inside")
        _kill_this_session()
        handle.result(timeout=5)


def test_a_session_ended_inside_an_atomic_step_is_the_workers_loss(worker: object) -> None:
    """The atomic block closes the dead session on its way out: no connection left
    to probe is a lost session, not an error of the activity's (max_attempts=1)."""
    handle = t.ends_own_session_once.start("atomic-own")
    assert handle.result(timeout=30) == 2
    step = Activity.objects.get(job__workflow_id=handle.id)
    assert step.attempts == 1  # the lost attempt was not counted
    events = list(Journal.objects.filter(job=step.job).values_list("event", flat=True))
    assert events.count("lease_expired") == 1 and "step_retried" not in events


def test_losses_before_an_operator_retry_do_not_count() -> None:
    t.add.start(2, 3)
    worker_id = uuid.uuid4()
    for _ in range(UNCOUNTED_LOSSES):
        (step,) = claim(queue="default", worker_id=worker_id, limit=1, lease_seconds=60)
        release_after_loss(step, worker_id, OperationalError("server closed the connection"))
    Journal.objects.create(job_id=step.job_id, event="retried")  # as control.retry_job

    (step,) = claim(queue="default", worker_id=worker_id, limit=1, lease_seconds=60)
    release_after_loss(step, worker_id, OperationalError("server closed the connection"))

    assert Stream.objects.get(pk=step.id).status == "READY"  # released, uncounted again


def test_a_wait_retries_lost_connections_only() -> None:
    params = dict(connection.get_connection_params())
    for key in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(key, None)
    with psycopg.connect(**params, autocommit=True) as conn:
        conn.execute("SET statement_timeout = 10")
        with pytest.raises(psycopg.OperationalError) as cancelled:
            conn.execute("SELECT pg_sleep(1)")
    assert not _connection_lost(cancelled.value)  # 57014: the session lives on
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(**{**params, "host": "127.0.0.1", "port": 1}, connect_timeout=2)
    assert _connection_lost(refused.value)  # no SQLSTATE: the server is away
    assert _connection_lost(_error_of_another_session())  # 57P01, wrapped by Django
