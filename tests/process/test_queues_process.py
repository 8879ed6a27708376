"""Queue limits and pause/resume across real worker processes."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
from django.core.management import CommandError, call_command

from hotmesh_django.models import JobStatus
from tests import activities as a
from tests import workflows as w
from tests.conftest import WorkerProcess, wait_until
from tests.models import Counter, Interval

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]
Spawn = Callable[..., WorkerProcess]


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def test_concurrency_limit_holds_across_processes(spawn_worker: Spawn) -> None:
    handles = [a.tracked.start(f"k{i}", 0.2) for i in range(16)]
    procs = [spawn_worker("--concurrency", "4") for _ in range(3)]
    for handle in handles:
        handle.result(timeout=60)
    intervals = list(Interval.objects.values_list("started", "ended"))
    assert len(intervals) == 16
    assert _max_overlap(intervals) == 2  # the limit, and it was used
    for proc in procs:
        proc.send_signal(signal.SIGTERM)


def test_rate_limit_holds_across_processes(spawn_worker: Spawn) -> None:
    handles = [a.rated.start(f"r{i}") for i in range(15)]
    for _ in range(2):
        spawn_worker("--concurrency", "4")
    for handle in handles:
        handle.result(timeout=60)
    starts = sorted(Interval.objects.values_list("started", flat=True))
    # A bucket of 5 refilled at 5/s: at most 5 + 5 starts in any one second.
    for i, first in enumerate(starts):
        assert sum(1 for s in starts[i:] if s < first + 1.0) <= 10
    assert starts[-1] - starts[0] >= 1.5


def test_pause_and_resume_a_queue_on_every_worker(spawn_worker: Spawn) -> None:
    running = a.slow.using(queue="pq").start(1.0, "inflight")
    spawn_worker("--queues", "pq")
    wait_until(lambda: Counter.objects.filter(key="inflight").exists(), timeout=20)
    call_command("hotmesh_ctl", "pause", "pq")
    waiting = a.add.using(queue="pq").start(1, 1)
    assert running.result(timeout=10) == 1  # in-flight work finishes
    time.sleep(1.0)
    assert waiting.status() == JobStatus.READY  # nothing new is claimed
    started = time.monotonic()
    call_command("hotmesh_ctl", "resume", "pq")
    assert waiting.result(timeout=10) == 2
    assert time.monotonic() - started < 1.0  # obeyed through NOTIFY, not polling


def test_pause_stops_a_workflow_already_moving_through_the_queue(spawn_worker: Spawn) -> None:
    """Each step's worker hands itself the next one; that hand-off once read a copy of
    the paused queues taken when the chain began, so the chain ran on, paused."""
    handle = w.slow_steps_on.start("moving", 8, 0.4, "pq2")
    spawn_worker("--queues", "default,pq2")
    wait_until(lambda: Counter.objects.filter(key="moving:1").exists(), timeout=20)
    call_command("hotmesh_ctl", "pause", "pq2", "--force")
    at_pause = Counter.objects.filter(key__startswith="moving:").count()
    time.sleep(2.0)
    # The step in flight at the pause finishes; at most one handed over in that
    # instant may start, and then nothing.
    assert Counter.objects.filter(key__startswith="moving:").count() <= at_pause + 1
    assert handle.status() != JobStatus.SUCCESSFUL
    call_command("hotmesh_ctl", "resume", "pq2")
    assert handle.result(timeout=60) == 8


def test_pausing_an_unknown_queue_says_so() -> None:
    with pytest.raises(CommandError, match="Unknown queue 'nope'"):
        call_command("hotmesh_ctl", "pause", "nope")
    call_command("hotmesh_ctl", "pause", "nope", "--force")


def test_per_key_limit_holds_without_serialising_the_queue(spawn_worker: Spawn) -> None:
    handles = [
        a.tenant_work.using(concurrency_key=f"tenant-{i % 2}").start(f"tenant-{i % 2}", 0.2)
        for i in range(8)
    ]
    handles += [a.tenant_work.start("nokey", 0.2) for _ in range(3)]
    procs = [spawn_worker("--concurrency", "4") for _ in range(2)]
    for handle in handles:
        handle.result(timeout=60)
    by_key: dict[str, list[tuple[float, float]]] = {}
    for key, started, ended in Interval.objects.values_list("key", "started", "ended"):
        by_key.setdefault(key, []).append((started, ended))
    assert _max_overlap(by_key["tenant-0"]) == 1
    assert _max_overlap(by_key["tenant-1"]) == 1
    everything = [i for intervals in by_key.values() for i in intervals]
    assert _max_overlap(everything) >= 3  # other tenants and keyless work ran alongside
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
