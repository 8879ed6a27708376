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

import pytest

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


LOST_REPLY = (
    "engine bug: a claim (or a hand-off in an ack) that commits while its connection "
    "dies leaves rows RUNNING under a live worker that never got them; the heartbeat's "
    "extend_leases() renews every RUNNING row of the worker id, so they never expire"
)


# Whether the reply of a committing claim is lost depends on timing, so the chaos run
# is not strict; test_rows_claimed_by_a_live_worker_that_lost_them_are_rerun below
# reproduces the bug deterministically.
@pytest.mark.xfail(
    strict=False,
    reason="open: under back-to-back pg_terminate_backend of every worker session some"
    " workflows stay unfinished past 60 s; lost claim replies are fixed (see below)",
)
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
