"""Steady load for a while: worker memory and table sizes must level off.

CI runs a short soak (HOTMESH_SOAK_SECONDS, default 60). The real one is
`HOTMESH_SOAK_SECONDS=1800 python -m pytest tests/process/test_soak.py -s`; it prints
the samples so the curve can be read, not just the verdict.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.db import connection

from hotmesh_django.models import Job, JobStatus, Stream
from tests import workflows as w
from tests.conftest import WorkerProcess, wait_until

SOAK_SECONDS = float(os.environ.get("HOTMESH_SOAK_SECONDS", "60"))
RATE = 15.0  # workflows started per second
PRUNE_AFTER = 10  # seconds a finished job is kept
AUTO_PRUNE_EVERY = 60  # engine.prune.AUTO_PRUNE_INTERVAL_SECONDS

pytestmark = [
    pytest.mark.process,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(SOAK_SECONDS + 240),
]


@dataclass
class Sample:
    at: float
    rss_mb: list[float]
    jobs: int
    messages: int
    table_mb: float


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _table_mb() -> float:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c"
            " WHERE c.relkind = 'r' AND c.relname LIKE 'hotmesh\\_django\\_%%'"
        )
        return float(cursor.fetchone()[0]) / 2**20


def _autovacuum_on() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SHOW autovacuum")
        return bool(cursor.fetchone()[0] == "on")


def _stuck_report(procs: list[WorkerProcess]) -> str:
    """What the jobs still active look like, for a failure that happens once in a long
    run: their rows, steps, messages and journal, and the workers' last log lines."""
    lines = []
    for job in Job.objects.active()[:5]:
        lines.append(f"job {job.pk} {job.workflow_id} {job.name} {job.status} {job.updated_at}")
        for step in job.activities.order_by("seq"):
            lines.append(f"  step {step.seq} {step.kind} {step.name} {step.status}")
        for message in Stream.objects.filter(job=job):
            lines.append(
                f"  message {message.pk} {message.kind} {message.status} step={message.step}"
                f" worker={message.worker} lease={message.lease_expires_at}"
                f" visible={message.visible_at}"
            )
        for entry in job.journal.order_by("-id")[:12]:
            lines.append(f"  journal {entry.step} {entry.event} {entry.name} {entry.created_at}")
    for proc in procs:
        lines.append(proc.log()[-1500:])
    return "jobs still active after the load stopped:\n" + "\n".join(lines)


def test_steady_load_levels_off(spawn_worker: Callable[..., WorkerProcess]) -> None:
    env = {"HOTMESH_PRUNE_AFTER_SECONDS": str(PRUNE_AFTER)}
    procs = [spawn_worker("--concurrency", "4", env_extra=env) for _ in range(2)]
    rng = random.Random(3)
    samples: list[Sample] = []
    started = 0
    begin = time.monotonic()
    next_sample = begin
    while (elapsed := time.monotonic() - begin) < SOAK_SECONDS:
        # Mostly 3-step workflows, some with a timer or a signal round trip.
        while started < elapsed * RATE:
            pick = rng.random()
            if pick < 0.8:
                w.three_steps.start(started)
            elif pick < 0.9:
                w.sleeper.start(0.2)
            else:
                w.waiter.start("go").signal("go", started)
            started += 1
        if time.monotonic() >= next_sample:
            next_sample += max(5.0, SOAK_SECONDS / 60)
            samples.append(
                Sample(
                    at=elapsed,
                    rss_mb=[_rss_mb(p.pid) for p in procs],
                    jobs=Job.objects.count(),
                    messages=Stream.objects.count(),
                    table_mb=_table_mb(),
                )
            )
            print(samples[-1])
        time.sleep(0.02)

    # Keeping up: the backlog drains at once when the load stops.
    try:
        wait_until(lambda: not Job.objects.active().exists(), 60)
    except AssertionError:
        raise AssertionError(_stuck_report(procs)) from None
    assert not Job.objects.exclude(status=JobStatus.SUCCESSFUL).exists()
    assert not Stream.objects.exists()
    for proc in procs:
        assert proc.poll() is None, proc.log()[-3000:]

    # Bounded by retention: finished jobs live PRUNE_AFTER s, plus up to one
    # automatic-prune interval, plus the ones still running.
    retained = RATE * (PRUNE_AFTER + AUTO_PRUNE_EVERY + 30)
    assert max(s.jobs for s in samples) < retained, samples
    assert max(s.messages for s in samples) < RATE * 10, samples
    # Memory levels off: past the first third, no worker grows by more than 15 MB.
    settled = [s for s in samples if s.at >= SOAK_SECONDS / 3]
    for i in range(len(procs)):
        assert settled[-1].rss_mb[i] - settled[0].rss_mb[i] < 15, samples
    if SOAK_SECONDS >= 3 * (PRUNE_AFTER + AUTO_PRUNE_EVERY) and _autovacuum_on():
        # Long enough for retention to bite: tables stop growing in the last half
        # (what they gain is reused once vacuum catches up; a server with autovacuum
        # off, like the benchmark machine's, grows by design).
        late = [s for s in samples if s.at >= SOAK_SECONDS / 2]
        assert late[-1].table_mb < 1.25 * late[0].table_mb + 2, samples
