"""Real worker subprocesses: signals, SIGKILL rescue, many workers, bad flags."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter as Tally
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db.models import Count

import hotmesh_django as hm
from hotmesh_django.models import Activity, Job, JobStatus, Journal, Stream, Worker
from tests import activities as a
from tests import workflows as w
from tests.conftest import ROOT, WorkerProcess, wait_until
from tests.models import Counter

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]

Spawn = Callable[..., WorkerProcess]


def _running(key: str) -> bool:
    """True once the activity for `key` is inside its body (it counted the call)."""
    # Compared in Python, not with an `input__args__1` lookup: with HOTMESH_CODEC on
    # the column holds a sealed envelope that SQL cannot look into.
    return Counter.objects.filter(key=key, value__gte=1).exists() and any(
        step.input["args"][1] == key for step in Activity.objects.filter(status="RUNNING")
    )


def test_burst_worker_drains_and_exits(spawn_worker: Spawn) -> None:
    handles = [a.add.start(i, i) for i in range(20)]
    proc = spawn_worker("--burst", "--concurrency", "4")
    assert proc.wait(timeout=60) == 0, proc.log()
    assert [h.result(timeout=1) for h in handles] == [i * 2 for i in range(20)]
    assert not Worker.objects.exists()
    # Whatever LOGGING says, the command says on stdout that it ran and stopped.
    assert f"hotmesh worker pid={proc.pid}: queues=all, 1 process(es) x 4 thread(s), burst" in (
        proc.log()
    )
    assert f"hotmesh worker pid={proc.pid} stopped." in proc.log()


def test_a_worker_warns_of_a_queue_nothing_knows(spawn_worker: Spawn) -> None:
    proc = spawn_worker("--burst", "--queues", "default,ordres")
    assert proc.wait(timeout=60) == 0, proc.log()
    assert "uses queue 'ordres'" in proc.log()  # a typo of a queue nobody uses
    assert "uses queue 'default'" not in proc.log()


def test_burst_worker_says_what_it_leaves_scheduled(spawn_worker: Spawn) -> None:
    """It exited 0 without a word about a delayed start due later."""
    later = a.add.using(delay=600).start(1, 2)
    proc = spawn_worker("--burst")
    assert proc.wait(timeout=60) == 0, proc.log()
    assert "1 scheduled message(s) left" in proc.log()
    assert "the next is due in 59" in proc.log()  # 599.x s
    assert later.status() == JobStatus.READY


def test_a_burst_worker_stopped_before_the_database_answers_exits_cleanly(
    spawn_worker: Spawn,
) -> None:
    """It logged "worker started" after the signal and died on a traceback."""
    # A server that refuses connections (the embedded one would create a missing
    # database, so a wrong name is not enough).
    unreachable = {"DATABASE_URL": "postgres://root@127.0.0.1:1/hotmesh_unreachable"}
    proc = spawn_worker("--burst", env_extra=unreachable)
    wait_until(lambda: "database unavailable" in proc.log(), timeout=30)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, proc.log()
    log = proc.log()
    assert "Traceback" not in log, log
    assert "worker started" not in log
    assert "worker stopped before it began to work" in log
    assert "could not count the scheduled messages left" in log


def test_burst_worker_finishes_workflows_with_children_before_exiting(spawn_worker: Spawn) -> None:
    """The parent's turn queues its children's turns: a burst worker must look at every
    queue before it takes "nothing claimed" for "drained". Polling only, with a long
    interval, nothing else would make it look again in time."""
    handles = [w.parent.start(1), w.child_fanout.start(3)]
    env = {"HOTMESH_POLL_INTERVAL_SECONDS": "30"}
    proc = spawn_worker("--burst", "--concurrency", "4", "--poll-only", env_extra=env)
    assert proc.wait(timeout=60) == 0, proc.log()
    left = list(Job.objects.exclude(status=JobStatus.SUCCESSFUL).values("id", "name", "status"))
    assert not left, (left, list(Stream.objects.values()), proc.log())
    assert [h.result(timeout=1) for h in handles] == [[101, 100, 101, 102], 303]


def test_first_sigterm_lets_the_running_activity_finish(spawn_worker: Spawn) -> None:
    handle = a.slow.start(1.5, "graceful")
    proc = spawn_worker("--concurrency", "2")
    wait_until(lambda: _running("graceful"), timeout=20)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, proc.log()
    assert handle.result(timeout=1) == 1
    assert Counter.objects.get(key="graceful").value == 1
    assert not Stream.objects.exists() and not Worker.objects.exists()


def test_first_sigterm_starts_no_further_step_of_a_workflow(spawn_worker: Spawn) -> None:
    """A worker hands itself a workflow's next step as it records the last one; after
    SIGTERM it once went on doing so, step after step, past --graceful-timeout."""
    handle = w.slow_steps.start("chain", 4, 1.0)
    proc = spawn_worker("--concurrency", "2")
    wait_until(lambda: _running("chain:0"), timeout=20)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, proc.log()
    assert Counter.objects.get(key="chain:0").value == 1  # in flight: it finished
    assert not Counter.objects.filter(key="chain:1").exists()  # nothing new started
    assert handle.status() != JobStatus.SUCCESSFUL
    spawn_worker()
    assert handle.result(timeout=60) == 4


def test_second_sigterm_exits_at_once(spawn_worker: Spawn) -> None:
    handle = a.slow.start(30, "impatient")
    proc = spawn_worker()
    wait_until(lambda: _running("impatient"), timeout=20)
    proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "finishing in-flight work" in proc.log(), timeout=10)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) != 0
    assert handle.status() == JobStatus.RUNNING  # its lease will expire; rescued below


def test_graceful_timeout_releases_unfinished_work(spawn_worker: Spawn) -> None:
    handle = a.slow.start(30, "released")
    proc = spawn_worker("--graceful-timeout", "0.5")
    wait_until(lambda: _running("released"), timeout=20)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0, proc.log()
    stream = Stream.objects.get()
    # Given back with its attempt uncounted, and journaled as released.
    assert (stream.status, stream.worker, stream.attempts) == ("READY", None, 0)
    assert handle.status() == JobStatus.READY
    assert [e["event"] for e in handle.journal()][-1] == "released"


def test_a_release_at_shutdown_does_not_use_up_an_attempt(spawn_worker: Spawn) -> None:
    handle = a.slow_first_time.start("deploy")  # max_attempts=1
    first = spawn_worker("--graceful-timeout", "0.5")
    wait_until(lambda: Counter.objects.filter(key="deploy", value=1).exists(), timeout=20)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=15) == 0, first.log()
    spawn_worker()
    assert handle.result(timeout=30) == 2
    step = Activity.objects.get(job__workflow_id=handle.id)
    assert (step.status, step.attempts) == ("SUCCESSFUL", 1)


def test_sigkill_mid_activity_is_rescued_by_another_worker(spawn_worker: Spawn) -> None:
    handle = a.slow.start(3, "killed")
    victim = spawn_worker()
    wait_until(lambda: _running("killed"), timeout=20)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=5)
    spawn_worker()
    assert handle.result(timeout=40) == 2  # the second call's count
    step = Activity.objects.get(job__workflow_id=handle.id)
    assert (step.status, step.attempts) == ("SUCCESSFUL", 2)
    events = [e["event"] for e in handle.journal()]
    assert "lease_expired" in events
    assert not Stream.objects.exists()
    assert not Job.objects.filter(status="RUNNING").exists()


def test_sigkill_during_a_workflow_keeps_each_step_once(spawn_worker: Spawn) -> None:
    handle = w.slow_steps.start("wfkill", 3, 1.0)
    victim = spawn_worker()
    wait_until(lambda: _running("wfkill:1"), timeout=30)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=5)
    spawn_worker()
    handle.result(timeout=60)
    completed = Journal.objects.filter(job__workflow_id=handle.id, event="step_completed")
    assert sorted(completed.values_list("step", flat=True)) == [1, 2, 3]
    counts = dict(Counter.objects.values_list("key", "value"))
    assert counts == {"wfkill:0": 1, "wfkill:1": 2, "wfkill:2": 1}


def test_many_workers_run_every_job_exactly_once(spawn_worker: Spawn) -> None:
    jobs = [a.slow.start(0, f"once:{i}") for i in range(300)]
    flows = [w.three_steps.start(i) for i in range(60)]
    procs = [spawn_worker("--concurrency", "4") for _ in range(3)]
    assert [f.result(timeout=120) for f in flows] == [i + 3 for i in range(60)]
    for job in jobs:
        assert job.result(timeout=120) == 1
    assert set(Counter.objects.values_list("value", flat=True)) == {1}
    per_step = Tally(Journal.objects.filter(event="step_completed").values_list("job_id", "step"))
    assert len(per_step) == 300 + 60 * 3 and set(per_step.values()) == {1}
    busy = Activity.objects.values("job__queue").annotate(n=Count("id"))
    assert busy
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        assert proc.wait(timeout=30) == 0, proc.log()


def test_process_pool_runs_and_stops_together(spawn_worker: Spawn) -> None:
    handles = [a.add.start(i, 1) for i in range(40)]
    proc = spawn_worker("--processes", "2", "--concurrency", "2")
    assert [h.result(timeout=60) for h in handles] == [i + 1 for i in range(40)]
    wait_until(lambda: Worker.objects.count() == 2, timeout=20)
    assert len(set(Worker.objects.values_list("pid", flat=True))) == 2
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, proc.log()
    assert not Worker.objects.exists()


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(x) for x in found.stdout.split()]


def _gone(pids: list[int]) -> bool:
    return not any(Path(f"/proc/{pid}").exists() for pid in pids)


def _busy_pool(spawn_worker: Spawn, *flags: str) -> tuple[WorkerProcess, list[int]]:
    for i in range(4):
        a.slow.start(60, f"pool:{i}")
    proc = spawn_worker("--processes", "2", "--concurrency", "2", *flags)
    wait_until(lambda: Counter.objects.filter(key__startswith="pool:").count() == 4, timeout=30)
    children = _children(proc.pid)
    assert len(children) == 2
    return proc, children


def test_a_second_signal_to_the_pool_parent_stops_the_children_at_once(
    spawn_worker: Spawn,
) -> None:
    proc, children = _busy_pool(spawn_worker, "--graceful-timeout", "60")
    proc.send_signal(signal.SIGTERM)  # the parent only, as a supervisor would
    wait_until(lambda: "finishing in-flight work" in proc.log(), timeout=10)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) != 0
    wait_until(lambda: _gone(children), timeout=5)


def test_one_signal_to_the_whole_pool_group_drains_it(spawn_worker: Spawn) -> None:
    """Ctrl-C in a terminal (or `kill -TERM -PGID`) reaches the parent and every
    child at once: that is one signal, not two, so in-flight work is released (its
    attempt uncounted) and everything exits 0."""
    proc, children = _busy_pool(spawn_worker, "--graceful-timeout", "1")
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=15) == 0, proc.log()
    wait_until(lambda: _gone(children), timeout=5)
    assert "again: exiting now" not in proc.log()
    assert set(Stream.objects.values_list("status", "attempts")) == {("READY", 0)}
    assert Journal.objects.filter(event="released").count() == 4


def test_pool_children_stop_when_their_parent_is_killed(spawn_worker: Spawn) -> None:
    proc, children = _busy_pool(spawn_worker, "--graceful-timeout", "1")
    proc.kill()
    proc.wait(timeout=5)
    # They notice within a second, then shut down gracefully: their messages go back.
    wait_until(lambda: _gone(children), timeout=15)
    assert set(Stream.objects.values_list("status", flat=True)) == {"READY"}


def test_shutdown_takes_the_graceful_timeout_not_a_wait_per_runner(spawn_worker: Spawn) -> None:
    for i in range(6):
        a.slow.start(60, f"stuck:{i}")
    proc = spawn_worker("--concurrency", "6", "--graceful-timeout", "1")
    wait_until(lambda: Counter.objects.filter(key__startswith="stuck:").count() == 6, timeout=30)
    proc.send_signal(signal.SIGTERM)
    # 1 s of grace and one short allowance for all six runners together (it used to
    # be 1.5 s more per runner still busy: 10 s here).
    assert proc.wait(timeout=6) == 0, proc.log()
    assert Stream.objects.filter(status="READY").count() == 6


def test_durable_sleep_spans_a_worker_restart(spawn_worker: Spawn) -> None:
    handle = w.sleeper.start(2.0)
    first = spawn_worker()
    wait_until(lambda: Stream.objects.filter(kind="TIMER").exists(), timeout=20)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=20) == 0
    spawn_worker()
    assert float(handle.result(timeout=30)) >= 2.0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--concurrency", "0"], "must be from 1 to 512, not 0"),
        (["--concurrency", "many"], "is not an integer"),
        (["--concurrency", "100000"], "must be from 1 to 512, not 100000"),
        (["--processes", "-2"], "must be from 1 to 128, not -2"),
        (["--graceful-timeout", "soon"], "is not a number of seconds"),
        (["--graceful-timeout", "inf"], "must be from 0 to 604800 seconds (a week), not inf"),
        (["--graceful-timeout", "nan"], "must be from 0 to 604800 seconds"),
        (["--import", ".relative"], "Cannot import '.relative'"),
        (["--queues", ","], "give at least one queue name"),
        (["--import", "no.such.module"], "Cannot import 'no.such.module'"),
        (["--import", "tests.broken_module"], "Cannot import 'tests.broken_module': RuntimeError"),
        (["--colour", "blue"], "unrecognized arguments"),
    ],
)
def test_bad_flags_give_a_usage_error(
    worker_env: dict[str, str], flags: list[str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, str(Path(ROOT, "manage.py")), "hotmesh_worker", *flags],
        env=worker_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_only_listed_queues_are_served(spawn_worker: Spawn) -> None:
    other = a.add.using(queue="other").start(1, 1)
    mine = a.add.using(queue="mine").start(2, 2)
    spawn_worker("--queues", "mine")
    assert mine.result(timeout=30) == 4
    assert hm.get_handle(other.id).status() == JobStatus.READY
