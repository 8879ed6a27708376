"""hotmesh_django.testing: run_workflow, skip_time and the crash-consistency checker."""

from __future__ import annotations

import time
from collections import Counter as Tally

import pytest

import hotmesh_django as hm
from hotmesh_django.models import Job, Stream
from hotmesh_django.testing import (
    CrashChecker,
    check_crash_consistency,
    run_workflow,
    skip_time,
)
from tests import activities as a
from tests import workflows as w
from tests.integration import kit_defs as k
from tests.models import Effect

transactional = pytest.mark.django_db(transaction=True)


@transactional
def test_run_workflow_returns_the_result() -> None:
    assert run_workflow(w.three_steps, 1) == 4
    assert run_workflow(a.add, 2, b=3) == 5
    assert not Stream.objects.exists()


@transactional
def test_run_workflow_raises_workflow_failed() -> None:
    with pytest.raises(hm.WorkflowFailed) as info:
        run_workflow(w.raises)
    assert (info.value.type, info.value.message) == ("RuntimeError", "workflow bug")


@transactional
def test_run_workflow_times_out_with_the_job_state() -> None:
    with pytest.raises(TimeoutError, match=r"status WAITING, last events .*step_completed@1"):
        run_workflow(w.changes, timeout=1.5)


@pytest.mark.django_db
def test_run_workflow_needs_committed_data() -> None:
    with pytest.raises(RuntimeError, match=r"transaction=True"):
        run_workflow(w.three_steps, 1)
    assert not Job.objects.exists()


@transactional
def test_skip_time_makes_an_hour_of_sleep_instant() -> None:
    began = time.monotonic()
    with skip_time() as skipper:
        assert run_workflow(k.napper, 3600, timeout=20) == "slept twice, got 3"
    assert time.monotonic() - began < 10
    assert skipper.skipped >= 2


@transactional
def test_skip_time_skips_retry_backoff_and_delayed_starts() -> None:
    with skip_time():
        handle = w.three_steps.using(delay=3600).start(5)
        began = time.monotonic()
        assert run_workflow(a.fail_times, "kit-backoff", 2, timeout=20) == 3
        from hotmesh_django.testing import run_until_finished

        assert run_until_finished(handle, timeout=20) == 8
    assert time.monotonic() - began < 10


@transactional
def test_skip_time_leaves_signal_timeouts_unless_asked() -> None:
    with skip_time():
        handle = k.patient.start(3600)
        from hotmesh_django.testing import WorkerThread

        with WorkerThread():
            time.sleep(1.0)
            assert handle.status() == hm.JobStatus.WAITING
            handle.signal("go", "arrived")
            assert handle.result(timeout=10) == "arrived"
    with skip_time(timeouts=True):
        assert run_workflow(k.patient, 3600, timeout=20) == "timed out"


@transactional
def test_skip_time_keeps_workflow_deadlines() -> None:
    with skip_time(), pytest.raises(hm.WorkflowFailed) as info:
        run_workflow(w.times_out, timeout=20)
    assert info.value.type == "WorkflowTimeout"


@pytest.mark.process
@transactional
def test_crash_consistency_of_three_steps() -> None:
    report = check_crash_consistency(w.three_steps, 10)
    assert report.ok, str(report)
    assert report.reference == ("result", 13)
    assert {"claim", "turn_commit", "step_start", "step_done", "ack_commit"} <= set(report.points)
    assert report.crashes == len(report.runs) == len(report.points)
    assert {r.died_at for r in report.runs} == set(report.points)
    assert all(r.step_counts == {1: 1, 2: 1, 3: 1} for r in report.runs)


@pytest.mark.process
@transactional
def test_crash_consistency_of_atomic_steps_keeps_effects_exactly_once() -> None:
    report = check_crash_consistency(w.atomic_steps, "kit", 3)
    assert report.ok, str(report)
    assert report.crashes >= 9
    runs = len(report.runs) + 1  # the crash runs and the reference run
    assert Tally(Effect.objects.values_list("key", flat=True)) == {
        f"kit:{i}": runs for i in range(3)
    }


@pytest.mark.process
@transactional
def test_crash_consistency_of_keyed_effects_and_fan_out() -> None:
    report = CrashChecker(definition=k.keyed_effects, max_points=8).run(2)
    assert report.ok and len(report.runs) == 8, str(report)
    assert set(Tally(Effect.objects.values_list("key", flat=True)).values()) == {1}
    assert Effect.objects.count() == 2 * 9
    assert check_crash_consistency(k.mixed, 1).reference[1]["fanned"] == [2, 3, 4]


@pytest.mark.process
@transactional
def test_crash_consistency_reports_a_nondeterministic_workflow() -> None:
    checker = CrashChecker(definition=k.unstable, max_points=2, raise_on_failure=False)
    report = checker.run()
    assert not report.ok
    assert "differs from the normal run" in report.problems[0]
    with pytest.raises(AssertionError, match="kit.unstable"):
        CrashChecker(definition=k.unstable, max_points=1).run()
