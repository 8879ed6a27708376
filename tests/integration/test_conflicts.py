"""A transaction that Postgres aborts to break a real deadlock runs again."""

from __future__ import annotations

import datetime
import threading
import time
import uuid

import pytest
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from hotmesh_django.engine.claim import extend_leases
from hotmesh_django.engine.conflicts import retry_on_conflict
from hotmesh_django.models import Stream, StreamStatus
from tests.factories import StreamFactory
from tests.models import Counter

pytestmark = pytest.mark.django_db(transaction=True)


def _lock(key: str) -> None:
    Counter.objects.select_for_update().get(key=key)


def test_the_side_postgres_aborts_runs_again() -> None:
    Counter.objects.bulk_create([Counter(key="a"), Counter(key="b")])
    other_has_b = threading.Event()
    main_waits = threading.Event()
    errors: list[BaseException] = []

    def other() -> None:
        # Locks b, then a: the reverse of the main thread's order.
        try:
            with transaction.atomic():
                _lock("b")
                other_has_b.set()
                main_waits.wait(10)
                _lock("a")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    attempts = []

    def run() -> str:
        attempts.append(1)
        with transaction.atomic():
            _lock("a")
            if len(attempts) == 1:
                assert other_has_b.wait(10)
                # The main side waits first, so its deadlock check fires first
                # (deadlock_timeout) and Postgres aborts it, not the other side.
                threading.Timer(0.2, main_waits.set).start()
            _lock("b")
        return "done"

    thread = threading.Thread(target=other)
    thread.start()
    assert retry_on_conflict(run, what="test") == "done"
    thread.join(10)
    assert errors == []
    assert len(attempts) == 2


def test_inside_a_callers_transaction_nothing_is_retried() -> None:
    calls = []

    def run() -> None:
        calls.append(1)
        raise OperationalError("deadlock") from _Deadlock()

    with pytest.raises(OperationalError), transaction.atomic():
        retry_on_conflict(run, what="test")
    with pytest.raises(OperationalError):
        retry_on_conflict(run, what="test")
    assert len(calls) == 1 + 3


class _Deadlock(Exception):
    sqlstate = "40P01"


def test_a_heartbeat_passes_over_a_message_locked_elsewhere() -> None:
    """It waited for the lock, and so could close a deadlock with a cascade deleting
    many messages in another order."""
    worker_id = uuid.uuid4()
    held, free = StreamFactory.create_batch(
        2, status=StreamStatus.RUNNING, worker=worker_id, lease_expires_at=timezone.now()
    )
    locked, release = threading.Event(), threading.Event()

    def other() -> None:
        try:
            with transaction.atomic():
                Stream.objects.select_for_update().get(pk=held.pk)
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=other)
    thread.start()
    assert locked.wait(10)
    try:
        began = time.monotonic()
        extended = extend_leases(worker_id=worker_id, ids=[held.pk, free.pk], lease_seconds=30)
        assert time.monotonic() - began < 1
    finally:
        release.set()
        thread.join(10)
    assert extended == 1
    free.refresh_from_db()
    assert free.lease_expires_at > timezone.now() + datetime.timedelta(seconds=20)
