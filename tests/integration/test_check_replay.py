"""`manage.py hotmesh_check_replay`: replay journals against changed code, write nothing."""

from __future__ import annotations

import datetime
import io
from collections.abc import Iterator

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Max

from hotmesh_django.engine.replay_check import replay_job, select_jobs
from hotmesh_django.models import Activity, Job, JobStatus, Journal, Stream
from hotmesh_django.testing import WorkerThread, run_workflow
from tests import workflows as w
from tests.conftest import wait_until
from tests.integration import kit_defs as k

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _flags() -> Iterator[None]:
    yield
    w.FLAGS["changed"] = False
    k.FLAGS["reordered"] = False


def _check(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("hotmesh_check_replay", *args, stdout=out)
    except CommandError as exc:
        return exc.returncode, f"{out.getvalue()}{exc}"
    return 0, out.getvalue()


def _waiting(*handles: object) -> None:
    with WorkerThread():
        wait_until(
            lambda: all(h.status() == JobStatus.WAITING for h in handles),  # type: ignore[attr-defined]
            timeout=20,
        )


def _snapshot() -> tuple[object, ...]:
    return (
        list(Job.objects.order_by("id").values_list("id", "status", "updated_at")),
        Activity.objects.count(),
        Journal.objects.aggregate(Max("id"))["id__max"],
        Stream.objects.count(),
    )


def test_unchanged_code_replays_cleanly() -> None:
    waiting = w.changes.start()
    _waiting(waiting)
    assert run_workflow(w.three_steps, 1) == 4
    code, out = _check("--since", "7d", "-v", "2")
    assert code == 0, out
    assert "Replayed 2 jobs: 2 ok." in out
    assert "waits at step 2" in out and "returns" in out


def test_a_changed_step_is_reported_and_nothing_is_written() -> None:
    handle = w.changes.start()
    other = k.reorders.start()
    _waiting(handle, other)
    before = _snapshot()
    w.FLAGS["changed"] = True
    k.FLAGS["reordered"] = True
    code, out = _check("--since", "7d")
    assert code == 1
    assert f"MISMATCH {handle.id} t.changes [WAITING]: Step 2: the journal recorded signal" in out
    assert "'t.echo'" in out and f"MISMATCH {other.id}" in out
    assert "Replayed 2 jobs: 2 mismatch." in out
    assert _snapshot() == before
    # The filters narrow the check; the old code passes again.
    assert _check("--name", "t.three_steps")[0] == 0
    w.FLAGS["changed"] = False
    code, out = _check("--status", "waiting", "--name", "t.changes")
    assert (code, "Replayed 1 job: 1 ok." in out) == (0, True)


def test_missing_code_is_reported() -> None:
    handle = w.changes.start()
    _waiting(handle)
    Job.objects.filter(workflow_id=handle.id).update(name="t.deleted_workflow")
    code, out = _check()
    assert code == 1
    assert f"MISSING {handle.id} t.deleted_workflow" in out
    assert "Unknown workflow 't.deleted_workflow'" in out


def test_finished_jobs_are_checked_within_since_only() -> None:
    assert run_workflow(w.three_steps, 1) == 4
    job = Job.objects.get()
    w_job = replay_job(job)
    assert w_job.ok and w_job.detail == "returns (3 recorded steps)"
    Job.objects.update(updated_at=job.updated_at - datetime.timedelta(days=9))
    assert not select_jobs(since=datetime.timedelta(days=7)).exists()
    assert _check("--since", "7d")[1].strip().endswith("Replayed 0 jobs: none.")
    assert "Replayed 1 job: 1 ok." in _check("--since", "10d")[1]


def test_a_finished_job_whose_code_now_does_more_is_a_mismatch() -> None:
    assert run_workflow(w.three_steps, 1) == 4
    job = Job.objects.get()
    Activity.objects.filter(job=job, seq=3).delete()
    result = replay_job(job)
    assert result.outcome == "mismatch"
    assert "ends at step 2 but the code now calls activity 't.add'" in result.detail


def test_a_recorded_failure_replays_as_ok_and_a_new_error_does_not() -> None:
    with pytest.raises(Exception, match="workflow bug"):
        run_workflow(w.raises)
    assert replay_job(Job.objects.get()).outcome == "ok"
    Job.objects.update(error={"type": "OtherError", "message": ""})
    result = replay_job(Job.objects.get())
    assert (result.outcome, result.detail) == (
        "error",
        "The replay raised RuntimeError: workflow bug",
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--since", "soon"], "is not a duration"),
        (["--status", "sleeping"], "is not a job status"),
        (["--limit", "0"], "must be at least 1"),
    ],
)
def test_bad_flags(flags: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("hotmesh_check_replay", *flags)


def test_jobs_cut_off_by_a_cancel_replay_cleanly() -> None:
    waiter = w.waiter.start("never")  # no timeout: the wait is cut off, never timed out
    parent = k.long_parent.start()
    _waiting(waiter, parent)
    child = Job.objects.get(parent__workflow_id=parent.id)
    assert waiter.cancel() and parent.cancel()
    assert set(Activity.objects.values_list("status", flat=True)) == {JobStatus.CANCELLED}
    code, out = _check("--since", "1h", "-v", "2")
    assert code == 0, out
    assert "Replayed 3 jobs: 3 ok." in out
    for job in (waiter.id, parent.id, child.workflow_id):
        assert f"OK {job} " in out
    assert "[CANCELLED]: reaches step 1, where the job ended (1 recorded steps)" in out


def test_a_job_cut_off_by_its_timeout_replays_cleanly() -> None:
    napper = k.oversleeps.start()
    waiter = w.times_out.start()
    with WorkerThread():
        wait_until(lambda: napper.status() == waiter.status() == JobStatus.FAILED, timeout=20)
    for handle in (napper, waiter):
        result = replay_job(Job.objects.get(workflow_id=handle.id))
        assert (result.outcome, result.detail) == (
            "ok",
            "reaches step 1, where the job ended (1 recorded steps)",
        )


def test_a_cancelled_job_whose_code_changed_is_still_a_mismatch() -> None:
    handle = k.reorders.start()
    _waiting(handle)
    assert handle.cancel()
    assert replay_job(Job.objects.get()).outcome == "ok"
    k.FLAGS["reordered"] = True
    code, out = _check("--since", "1h")
    assert code == 1
    assert f"MISMATCH {handle.id} kit.reorders [CANCELLED]: Step 2: the journal" in out
