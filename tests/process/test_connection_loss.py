"""Worker backends terminated with pg_terminate_backend mid-claim, ack and journal write.

Every connection of the worker subprocesses is killed, over and over, while work
runs; afterwards nothing is lost, no step is recorded twice, every atomic effect
exists exactly once and the workers are still running.
"""

from __future__ import annotations

import random
import time
from collections import Counter as Tally
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone

from hotmesh_django.engine.notify import connect_raw
from hotmesh_django.models import Job, Journal, Stream
from hotmesh_django.testing import WorkerThread
from tests import activities as a
from tests import workflows as w
from tests.conftest import WorkerProcess, wait_until
from tests.models import Effect

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]

APP = "hm-conn-loss-worker"

_TERMINATE = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
 WHERE datname = current_database() AND application_name = %s
   AND backend_type = 'client backend' AND pid <> pg_backend_pid()
"""


def test_terminated_connections_lose_nothing_and_double_nothing(
    spawn_worker: Callable[..., WorkerProcess],
) -> None:
    atomic = [w.sturdy_steps.start(f"cl{i}", 3) for i in range(80)]
    plain = [w.sturdy_steps.start(f"pl{i}", 1) for i in range(40)]
    procs = [spawn_worker("--concurrency", "4", env_extra={"PGAPPNAME": APP}) for _ in range(2)]
    rng = random.Random(11)
    rounds = terminated = 0
    deadline = time.monotonic() + 90
    with connect_raw() as admin:
        while time.monotonic() < deadline and rounds < 40:
            if not Job.objects.filter(status__in=["READY", "RUNNING", "WAITING"]).exists():
                break
            time.sleep(rng.uniform(0.15, 0.4))
            terminated += len(admin.execute(_TERMINATE, [APP]).fetchall())
            rounds += 1
    print(f"{rounds} rounds, {terminated} backends terminated")
    assert rounds >= 5 and terminated >= 10

    try:
        wait_until(lambda: not Job.objects.active().exists(), 60)
    except AssertionError:
        pytest.fail(_describe_unfinished() + "\n" + "\n".join(p.log()[-4000:] for p in procs))
    assert [h.result(timeout=60) for h in atomic] == [3] * 80
    assert [h.result(timeout=30) for h in plain] == [1] * 40
    per_step = Tally(Journal.objects.filter(event="step_completed").values_list("job_id", "step"))
    assert len(per_step) == 80 * 6 + 40 * 2 and set(per_step.values()) == {1}
    assert Tally(Effect.objects.values_list("key", flat=True)) == {
        **{f"cl{i}:{s}": 1 for i in range(80) for s in range(3)},
        **{f"pl{i}:0": 1 for i in range(40)},
    }
    assert not Job.objects.exclude(status="SUCCESSFUL").exists()
    assert not Stream.objects.exists()
    for proc in procs:
        assert proc.poll() is None, proc.log()
        # Reconnecting, not spinning: a bounded number of complaints per worker.
        complaints = [line for line in proc.log().splitlines() if "error=" in line]
        assert len(complaints) < 400, proc.log()[-3000:]


def _describe_unfinished() -> str:
    """What the unfinished jobs look like, so a failure can be diagnosed."""
    lines = []
    for job in Job.objects.active()[:10]:
        lines.append(f"job {job.workflow_id} {job.status}")
        for step in job.activities.all():
            lines.append(f"  step {step.seq} {step.name} {step.status} attempts={step.attempts}")
        for msg in Stream.objects.filter(job=job):
            lines.append(
                f"  stream {msg.kind} step={msg.step} {msg.status} attempts={msg.attempts}"
                f" worker={msg.worker} lease={msg.lease_expires_at} visible={msg.visible_at}"
            )
        for entry in job.journal.all():
            lines.append(f"  journal {entry.step} {entry.event} {entry.name} {entry.attempt}")
    return "\n".join(lines)


def test_rows_claimed_by_a_live_worker_that_lost_them_are_rerun() -> None:
    """The state a lost claim reply leaves: RUNNING under a live worker's id."""
    handle = a.add.start(1, 1)
    thread = WorkerThread(concurrency=2)
    # What the claim statement commits when its reply never reaches the worker.
    Stream.objects.filter(job__workflow_id=handle.id).update(
        status="RUNNING", worker=thread.worker.id, attempts=1
    )
    with thread:
        # The lease is 2 s (tests.settings); a rescue should re-run it well within 10 s.
        wait_until(lambda: Job.objects.get(workflow_id=handle.id).status == "SUCCESSFUL", 10)


def test_a_timer_whose_notify_was_missed_is_promoted_by_the_polling_floor() -> None:
    """A "t:" NOTIFY sent while a worker's listener was reconnecting is lost; the
    worker already waits for a later timer, yet the earlier one must still fire."""
    later = a.add.using(delay=3600).start(1, 2)
    with WorkerThread(concurrency=2) as thread:
        # The worker has looked at the timers and now waits for the one an hour away.
        wait_until(lambda: thread.worker._next_due not in (None, 0.0), 10)
        # A retry or sleep that became due while the NOTIFY was lost: no pg_notify.
        missed = a.add.start(2, 2)
        Stream.objects.filter(job__workflow_id=missed.id).update(
            status="SCHEDULED", visible_at=timezone.now() - timedelta(seconds=1)
        )
        wait_until(lambda: Job.objects.get(workflow_id=missed.id).status == "SUCCESSFUL", 5)
    assert Job.objects.get(workflow_id=later.id).status == "READY"
