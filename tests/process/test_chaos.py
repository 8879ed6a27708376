"""Workers SIGKILLed at random moments while workflows run: nothing lost or doubled."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter as Tally
from collections.abc import Callable

import pytest

from hotmesh_django.models import Activity, Job, Journal, Stream
from tests import workflows as w
from tests.conftest import WorkerProcess
from tests.models import Effect

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]


def test_random_sigkills_lose_nothing_and_double_nothing(
    spawn_worker: Callable[..., WorkerProcess],
) -> None:
    count = int(os.environ.get("HOTMESH_CHAOS_WORKFLOWS", "150"))
    handles = [w.chaos.start(f"c{i}") for i in range(count)]
    procs = [spawn_worker("--concurrency", "4") for _ in range(3)]
    rng = random.Random(7)
    kills = 0
    # The long run (HOTMESH_CHAOS_WORKFLOWS=2000) gets more time to finish.
    deadline = time.monotonic() + 120 + count / 10
    while time.monotonic() < deadline:
        if not Job.objects.filter(status__in=["READY", "RUNNING", "WAITING"]).exists():
            break
        time.sleep(rng.uniform(0.3, 0.8))
        victim = rng.randrange(len(procs))
        os.killpg(procs[victim].pid, signal.SIGKILL)
        procs[victim].wait(timeout=10)
        procs[victim] = spawn_worker("--concurrency", "4")
        kills += 1
    print(f"{kills} workers killed")
    assert kills >= 3
    assert [h.result(timeout=60) for h in handles] == [f"c{i}" for i in range(count)]
    per_step = Tally(Journal.objects.filter(event="step_completed").values_list("job_id", "step"))
    assert len(per_step) == count * 4 and set(per_step.values()) == {1}
    effects = Tally(Effect.objects.values_list("key", flat=True))
    assert effects == {f"c{i}:fx": 1 for i in range(count)}
    assert not Job.objects.exclude(status="SUCCESSFUL").exists()
    assert not Activity.objects.exclude(status="SUCCESSFUL").exists()
    assert not Stream.objects.exists()
