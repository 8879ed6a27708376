"""A claim's rows arrive before its commit ends; the runner waits for it.

A deferred constraint trigger fires at commit, so it can hold a claim's commit open
for as long as a test needs (or make it fail), from the server's side: what the
client could see before the commit ended is then not a matter of timing.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import DatabaseError, connection, connections

from hotmesh_django.engine import early
from hotmesh_django.engine.claim import Claimed, claim, claim_early
from hotmesh_django.engine.execute import ack_success
from hotmesh_django.engine.notify import connect_raw, tables
from hotmesh_django.engine.turn import Local
from hotmesh_django.models import Job, JobStatus, Stream
from hotmesh_django.worker import dispatch
from tests import activities

pytestmark = pytest.mark.django_db(transaction=True)

HOLD_SECONDS = 0.6


def _at_commit(body: str) -> Iterator[None]:
    """Run plpgsql `body` at the commit of any transaction that updates a message."""
    stream = tables()["stream"]
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE FUNCTION hm_test_at_commit() RETURNS trigger LANGUAGE plpgsql"
            f" AS $$ BEGIN {body}; RETURN NULL; END $$"
        )
        cursor.execute(
            f"CREATE CONSTRAINT TRIGGER hm_test_at_commit AFTER UPDATE ON {stream}"
            " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hm_test_at_commit()"
        )
    try:
        yield
    finally:
        _drop_at_commit()


def _drop_at_commit() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER IF EXISTS hm_test_at_commit ON {tables()['stream']}")
        cursor.execute("DROP FUNCTION IF EXISTS hm_test_at_commit()")


@pytest.fixture
def slow_commit() -> Iterator[None]:
    yield from _at_commit(f"PERFORM pg_sleep({HOLD_SECONDS})")


@pytest.fixture
def failing_commit() -> Iterator[None]:
    yield from _at_commit("RAISE EXCEPTION 'refused at commit'")


def _local(worker_id: uuid.UUID) -> Local:
    return Local(worker_id=worker_id, queues=None, lease_seconds=60)


def _row_state(message_id: int) -> tuple[str, int]:
    with connect_raw() as other:
        row = other.execute(
            f"SELECT status, attempts FROM {tables()['stream']} WHERE id = %s",  # noqa: S608
            [message_id],
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def _bumps(key: str) -> int:
    """How often user code counted `key`, read on another session (this thread's
    connection is the claim's until its block ends)."""
    from tests.models import Counter

    with connect_raw() as other:
        row = other.execute(
            f"SELECT value FROM {Counter._meta.db_table} WHERE key = %s",  # noqa: S608
            [key],
        ).fetchone()
    return row[0] if row else 0


def _run(message: Claimed, worker_id: uuid.UUID, outcome: list[bool]) -> None:
    """A runner thread: run `message` as the worker's runners do."""
    try:
        outcome.append(dispatch(message, _local(worker_id)))
    finally:
        connections.close_all()


def test_rows_arrive_before_the_commit_and_user_code_runs_after_it(slow_commit: None) -> None:
    activities.fail_times.start("early", 0)
    worker_id = uuid.uuid4()
    outcome: list[bool] = []
    began = time.monotonic()
    with claim_early(queue="default", worker_id=worker_id, limit=5, lease_seconds=60) as batch:
        arrived = time.monotonic() - began
        (message,) = batch
        # Another session still sees the message as it was: the claim has not committed.
        assert _row_state(message.id) == ("READY", 0)
        runner = threading.Thread(target=_run, args=(message, worker_id, outcome), daemon=True)
        runner.start()
        runner.join(timeout=HOLD_SECONDS / 3)
        assert runner.is_alive(), "a runner must wait for the claim's commit"
        assert _bumps("early") == 0, "user code ran before the claim committed"
    committed = time.monotonic() - began
    runner.join(timeout=10)
    assert arrived < HOLD_SECONDS <= committed
    assert outcome == [False] and _bumps("early") == 1
    assert Job.objects.get(id=message.job_id).status == JobStatus.SUCCESSFUL


def test_a_claim_that_does_not_commit_runs_nothing_and_its_message_runs_again(
    failing_commit: None,
) -> None:
    activities.fail_times.start("lost", 0)
    worker_id = uuid.uuid4()
    with (
        pytest.raises(DatabaseError, match="refused at commit"),
        claim_early(queue="default", worker_id=worker_id, limit=5, lease_seconds=60) as batch,
    ):
        (message,) = batch
    assert not message.claim_committed()
    assert dispatch(message, _local(worker_id)) is False
    assert _bumps("lost") == 0
    # Written as if claimed anyway, the ack's guard would find nothing of this worker's.
    assert ack_success(message, _local(worker_id), 5) == (False, None)
    assert _row_state(message.id) == ("READY", 0)
    assert Job.objects.get(id=message.job_id).status == JobStatus.READY
    _drop_at_commit()
    (again,) = claim(queue="default", worker_id=worker_id, limit=5, lease_seconds=60)
    assert (again.id, again.attempts) == (message.id, 1)


def test_the_session_is_usable_after_a_statement_fails_in_the_pipeline() -> None:
    with (
        pytest.raises(DatabaseError, match="division by zero"),
        early.rows_then_commit("SELECT 1 / %(zero)s", {"zero": 0}),
    ):
        pass
    with early.rows_then_commit("SELECT %(a)s::int + 1", {"a": 1}) as (rows, commit):
        assert rows == [(2,)]
    assert commit.wait()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 42")
        assert cursor.fetchone() == (42,)


def test_a_statement_the_server_forgot_is_prepared_again() -> None:
    sql = "SELECT %(a)s::text || %(b)s::text || %(a)s::text"
    with early.rows_then_commit(sql, {"a": "x", "b": "y"}) as (rows, _):
        assert rows == [("xyx",)]
    assert early.statement_names(connection.connection)
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    with early.rows_then_commit(sql, {"a": "p", "b": "q"}) as (rows, _):
        assert rows == [("pqp",)]


def test_inside_a_transaction_it_refuses() -> None:
    from django.db import transaction
    from django.db.transaction import TransactionManagementError

    with (
        transaction.atomic(),
        pytest.raises(TransactionManagementError),
        early.rows_then_commit("SELECT 1", {}),
    ):
        pass


def test_placeholders_become_positional_once_per_name() -> None:
    query, names = early.positional("SELECT %(a)s, %(b)s, %(a)s, 5 %% 2")
    assert query == b"SELECT $1, $2, $1, 5 % 2"
    assert names == ("a", "b")


def test_a_worker_runs_a_job_claimed_early(start_worker: Callable[..., Any]) -> None:
    start_worker()
    handle = activities.add.start(20, 22)
    assert handle.result(timeout=10) == 42
    assert not Stream.objects.exists()
