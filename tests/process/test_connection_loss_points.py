"""A worker's session terminated at a chosen statement: a claim, an ack, a turn's write.

test_connection_loss kills sessions at random moments; here one worker's own session
is ended (HOTMESH_FAULTS="<point>:K:disconnect") just before the statement at that
point is sent, inside its transaction where there is one. The statement then fails
on a dead session, as after a network cut. Afterwards nothing is lost, no step is
recorded twice, every atomic effect exists once, nothing is left running, and the
faulted worker has reconnected and goes on working alone.
"""

from __future__ import annotations

import os
import re
import signal
from collections import Counter as Tally
from collections.abc import Callable
from typing import Any

import pytest

from hotmesh_django.models import Activity, Job, Journal, Stream
from tests import activities as a
from tests import workflows as w
from tests.conftest import WorkerProcess, wait_until
from tests.models import Effect

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]

STEPS = 2  # sturdy_steps rounds: an atomic effect step and a plain step each
FIRED = "hotmesh fault: disconnect at point"

# (workflows, atomic activity jobs, batch-acked activity jobs) in the second batch,
# which the faulted worker runs alone; the first, for both workers, is 5 times that.
Shape = tuple[int, int, int]
MIXED: Shape = (6, 2, 2)
# Each shape leaves one kind of ack for ack_send to hit: a step's (with the next
# turn, in one transaction), an atomic activity job's (in the activity's own
# transaction), or a batch of plain activity jobs' (on the ack thread).
CASES = [
    pytest.param("claim_send", MIXED, "", id="claim_send"),
    pytest.param("turn_write", MIXED, "", id="turn_write"),
    pytest.param("ack_send", (6, 0, 0), "", id="ack_send-step"),
    pytest.param("ack_send", (0, 6, 0), "", id="ack_send-atomic-job"),
    pytest.param("ack_send", (0, 0, 12), "in thread hotmesh-ack", id="ack_send-batch"),
]
TERMINATED = re.compile(r"hotmesh fault: session \d+ terminated\n")


class Batch:
    """Workflows of several steps and activity jobs (atomic and batch-acked), all
    keyed with `tag`, with what each must return and write."""

    def __init__(self, tag: str, shape: Shape, scale: int = 1) -> None:
        workflows, atomic, plain = (n * scale for n in shape)
        self.flows = [w.sturdy_steps.start(f"{tag}w{i}", STEPS) for i in range(workflows)]
        self.task_keys = [f"{tag}t{i}" for i in range(atomic)]
        self.atomic = [a.sturdy_effect.start(key) for key in self.task_keys]
        self.plain = [a.sturdy_add.start(i, 1) for i in range(plain)]
        self.effects = {
            **{f"{tag}w{i}:{s}": 1 for i in range(workflows) for s in range(STEPS)},
            **dict.fromkeys(self.task_keys, 1),
        }

    def check_results(self) -> None:
        assert [h.result(timeout=10) for h in self.flows] == [STEPS] * len(self.flows)
        assert [h.result(timeout=10) for h in self.atomic] == self.task_keys
        assert [h.result(timeout=10) for h in self.plain] == [i + 1 for i in range(len(self.plain))]

    def workflow_ids(self) -> list[str]:
        return [h.id for h in self.flows]


@pytest.mark.parametrize(("point", "shape", "where"), CASES)
def test_a_session_lost_at_the_point_loses_nothing_and_doubles_nothing(
    point: str, shape: Shape, where: str, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    first = Batch("a", shape, scale=5)
    faulted = spawn_worker(
        "--concurrency", "4", env_extra={"HOTMESH_FAULTS": f"{point}:3:disconnect"}
    )
    # The faulted worker starts alone, or a faster-starting one could take all the work.
    _wait_done(20, lambda: FIRED in faulted.log(), "the fault never fired", faulted)
    normal = spawn_worker("--concurrency", "4")
    _wait_done(40, _all_finished, "jobs left unfinished", faulted, normal)
    first.check_results()
    log = faulted.log()
    assert TERMINATED.search(log), log[-3000:]
    fired = next(line for line in log.splitlines() if FIRED in line)
    assert where in fired, fired

    assert normal.poll() is None, normal.log()[-3000:]
    # The faulted worker alone now: it must have reconnected to do this.
    os.killpg(normal.pid, signal.SIGKILL)
    normal.wait(timeout=10)
    second = Batch("b", shape)
    _wait_done(20, _all_finished, "the faulted worker did not go on", faulted)
    second.check_results()
    assert faulted.poll() is None, faulted.log()[-3000:]
    assert faulted.log().count(FIRED) == 1

    _check_exactly_once([first, second])


def _all_finished() -> bool:
    return not Job.objects.active().exists()


def _wait_done(timeout: float, done: Callable[[], Any], what: str, *procs: WorkerProcess) -> None:
    try:
        wait_until(done, timeout)
    except AssertionError:
        pytest.fail(f"{what} within {timeout} s\n" + "\n".join(p.log()[-3000:] for p in procs))


def _check_exactly_once(batches: list[Batch]) -> None:
    flows = [job_id for batch in batches for job_id in batch.workflow_ids()]
    per_step = Tally(Journal.objects.filter(event="step_completed").values_list("job_id", "step"))
    assert set(per_step.values()) == {1}, [k for k, n in per_step.items() if n != 1]
    per_job = Tally(job_id for job_id, _ in per_step)
    flow_jobs = list(Job.objects.filter(workflow_id__in=flows).values_list("id", flat=True))
    assert len(flow_jobs) == len(flows)
    assert [job_id for job_id in flow_jobs if per_job[job_id] != 2 * STEPS] == []
    expected = {key: n for batch in batches for key, n in batch.effects.items()}
    assert Tally(Effect.objects.values_list("key", flat=True)) == expected
    assert not Job.objects.exclude(status="SUCCESSFUL").exists()
    assert not Activity.objects.exclude(status="SUCCESSFUL").exists()
    assert not Stream.objects.exists()
