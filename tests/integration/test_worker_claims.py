"""Where and how much a worker claims.

An idle worker claims on the connection that received the NOTIFY (worker._claim_here).
The main loop is left asleep (a 30 s poll interval), so a job that starts within a
second was claimed by the listener; the tests also check the thread that claimed it,
since a wake-up of the main loop would run the job just as fast. Under a backlog a
worker claims ahead of its runners as far as the messages are short (prefetch()).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings

from hotmesh_django.engine import queues as queue_control
from hotmesh_django.engine.notify import connect_raw
from hotmesh_django.models import Job
from hotmesh_django.worker import Worker
from tests import activities as a
from tests.conftest import InProcessWorker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


class RecordingWorker(Worker):
    """A Worker that notes which thread claimed what, and its LISTEN sessions."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.claims: list[tuple[str, int]] = []
        self.sessions: list[int] = []

    def _claim_into_free(self, *, full: bool) -> int:
        claimed = super()._claim_into_free(full=full)
        if claimed:
            self.claims.append((threading.current_thread().name, claimed))
        return claimed

    def _subscribe(self) -> Any:
        raw = super()._subscribe()
        self.sessions.append(raw.info.backend_pid)
        return raw


@pytest.fixture
def idle_worker(transactional_db: None) -> Callable[..., RecordingWorker]:
    started: list[InProcessWorker] = []

    def start(**kwargs: Any) -> RecordingWorker:
        runner = InProcessWorker(concurrency=2)
        runner.worker = RecordingWorker(concurrency=2, **kwargs)
        started.append(runner.start())
        wait_until(lambda: runner.worker.sessions, 10)
        # The first (full) tick after subscribing, so what follows is a pure wake-up.
        time.sleep(0.3)
        return runner.worker

    with override_settings(HOTMESH_POLL_INTERVAL_SECONDS=30):
        yield start
        for runner in started:
            runner.stop()


def test_an_idle_worker_claims_on_its_listening_connection(
    idle_worker: Callable[..., RecordingWorker],
) -> None:
    worker = idle_worker()
    began = time.monotonic()
    handle = a.echo.start("now")
    assert handle.result(timeout=5) == "now"
    assert time.monotonic() - began < 2  # the 30 s poll did not do it
    assert worker.claims == [("hotmesh-listen", 1)]


def test_the_listener_subscribes_again_after_its_session_dies(
    idle_worker: Callable[..., RecordingWorker],
) -> None:
    worker = idle_worker()
    assert a.echo.start("before").result(timeout=5) == "before"
    with connect_raw() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [worker.sessions[-1]])
    wait_until(lambda: len(worker.sessions) == 2, 15)
    time.sleep(0.3)
    assert a.echo.start("after").result(timeout=5) == "after"
    assert worker.claims[-1] == ("hotmesh-listen", 1), (worker.claims, worker.sessions)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [worker.sessions[-1]]
        )
        assert cursor.fetchone() == (1,)


def test_a_paused_queue_is_not_claimed_by_the_listener(
    idle_worker: Callable[..., RecordingWorker],
) -> None:
    worker = idle_worker()
    queue_control.set_paused("default", True, force=True)
    time.sleep(0.5)  # the main loop reads the pause list after the c:queues NOTIFY
    handle = a.echo.start("held")
    time.sleep(1.0)
    assert Job.objects.get(workflow_id=handle.id).status == "READY"
    assert worker.claims == []
    queue_control.set_paused("default", False)
    assert handle.result(timeout=5) == "held"


def test_a_backlog_goes_to_the_main_loop_in_batches(
    idle_worker: Callable[..., RecordingWorker],
) -> None:
    """A NOTIFY that finds more work than the free slots hands over to the main loop,
    which keeps claiming (here the poll interval is 30 s, so only that hand-over can
    drain the queue in time)."""
    worker = idle_worker()
    handles = [a.echo.using(queue="default").start(i) for i in range(40)]
    assert [h.result(timeout=20) for h in handles] == list(range(40))
    threads = {name for name, _ in worker.claims}
    assert threads == {"hotmesh-listen", "test-worker"}  # test-worker: the main loop
    assert sum(n for _, n in worker.claims) == 40


def test_a_backlog_of_long_messages_is_not_hoarded(
    idle_worker: Callable[..., RecordingWorker],
) -> None:
    """Messages that take long are claimed only as runners free up: what a worker
    holds queued is what an idle worker elsewhere could have run."""
    worker = idle_worker()
    handles = [a.slow.start(0.3, f"s{i}") for i in range(8)]
    most = 0
    while not all(
        Job.objects.filter(workflow_id=h.id, status="SUCCESSFUL").exists() for h in handles
    ):
        # Held and not merely waiting for an ack's commit: running or queued (a
        # finished one whose ack is committing still shows RUNNING in the table,
        # though it holds no runner).
        most = max(most, worker.in_flight - worker._acking)
        time.sleep(0.01)
    assert most == 2  # the worker's concurrency: nothing queued behind the runners
    assert worker.prefetch() == 1


def test_a_backlog_of_short_messages_is_claimed_batches_ahead(
    idle_worker: Callable[..., RecordingWorker],
) -> None:
    worker = idle_worker()
    handles = [a.noop.start() for _ in range(60)]
    for h in handles:
        h.result(timeout=20)
    assert worker.run_seconds < 0.005
    assert worker.prefetch() >= 4
    # Batches: fewer claims than messages.
    assert len(worker.claims) < 60


@pytest.mark.parametrize(
    ("seconds", "batches"),
    [(0.0, 16), (0.0001, 16), (0.002, 10), (0.005, 4), (0.01, 2), (0.05, 2), (0.1, 1), (30, 1)],
)
def test_how_far_ahead_a_worker_claims_follows_how_long_messages_take(
    seconds: float, batches: int
) -> None:
    worker = Worker(concurrency=3)
    worker.run_seconds = seconds
    assert worker.prefetch() == batches
