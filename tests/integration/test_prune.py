"""Retention: prune() and `manage.py hotmesh_prune`."""

from __future__ import annotations

import argparse
import datetime
import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from hotmesh_django.engine import prune as prune_mod
from hotmesh_django.engine.notify import connect_raw
from hotmesh_django.engine.prune import PRUNE_LOCK_KEY, auto_prune, prune
from hotmesh_django.management.commands.hotmesh_prune import duration
from hotmesh_django.models import Activity, Job, JobStatus, Journal, Signal, Stream

pytestmark = pytest.mark.django_db(transaction=True)

DAY = datetime.timedelta(days=1)
WEEK = datetime.timedelta(days=7)


def _db_now() -> datetime.datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        return cursor.fetchone()[0]  # type: ignore[index,no-any-return]


_count = 0


def _job(
    status: str = JobStatus.SUCCESSFUL,
    age: datetime.timedelta | None = 10 * DAY,
    parent: Job | None = None,
) -> Job:
    """Make a job with a step, journal entries, a signal and a message; finished
    `age` ago (None: not finished)."""
    global _count
    _count += 1
    finished = None if age is None else _db_now() - age
    job = Job.objects.create(
        workflow_id=f"prune-{_count}",
        name="t.three_steps",
        status=status,
        finished_at=finished,
        parent=parent,
    )
    Activity.objects.create(job=job, seq=1, name="t.add", status=status)
    Journal.objects.bulk_create(
        [Journal(job=job, event="created"), Journal(job=job, event="started")]
    )
    Signal.objects.create(job=job, name="go", payload={"x": 1})
    Stream.objects.create(queue="default", kind="TIMER", job=job, name=job.name, status="SCHEDULED")
    return job


def _left(model: Any) -> int:
    return int(model.objects.count())


@pytest.fixture(autouse=True)
def _fresh_auto_prune() -> Iterator[None]:
    prune_mod.reset_process_state()
    yield
    prune_mod.reset_process_state()


def test_prune_deletes_old_finished_jobs_with_everything_they_own() -> None:
    old = [_job(s) for s in (JobStatus.SUCCESSFUL, JobStatus.FAILED, JobStatus.CANCELLED)]
    young = _job(JobStatus.SUCCESSFUL, age=DAY)
    active = [_job(s, age=None) for s in (JobStatus.READY, JobStatus.RUNNING, JobStatus.WAITING)]
    assert prune(WEEK) == 3
    kept = {young.pk, *(j.pk for j in active)}
    assert set(Job.objects.values_list("pk", flat=True)) == kept
    for model in (Activity, Journal, Signal, Stream):
        assert set(model.objects.values_list("job_id", flat=True)) == kept, model
    assert not Job.objects.filter(pk__in=[j.pk for j in old]).exists()
    assert prune(WEEK) == 0


def test_active_jobs_are_never_touched_even_with_a_finished_at() -> None:
    # A job retried after it failed keeps its old finished_at until it finishes again.
    retried = _job(JobStatus.RUNNING, age=30 * DAY)
    assert prune(datetime.timedelta(0)) == 0
    assert Job.objects.filter(pk=retried.pk).exists()
    assert Activity.objects.filter(job=retried).exists()


def test_statuses_choose_which_finished_jobs_go() -> None:
    _job(JobStatus.SUCCESSFUL)
    failed = _job(JobStatus.FAILED)
    _job(JobStatus.CANCELLED)
    assert prune(WEEK, statuses=[JobStatus.FAILED]) == 1
    assert not Job.objects.filter(pk=failed.pk).exists()
    assert _left(Job) == 2
    assert prune(WEEK, statuses=("SUCCESSFUL", "CANCELLED")) == 2


def test_prune_works_in_batches_each_its_own_statement() -> None:
    for _ in range(25):
        _job()
    with CaptureQueriesContext(connection) as queries:
        assert prune(WEEK, batch_size=10) == 25
    deletes = [q["sql"] for q in queries if q["sql"].lstrip().startswith("WITH doomed")]
    assert len(deletes) == 3  # 10 + 10 + 5
    assert all("LIMIT 10" in sql and "SKIP LOCKED" in sql for sql in deletes)
    assert _left(Job) == _left(Activity) == _left(Journal) == _left(Signal) == _left(Stream) == 0


def test_dry_run_counts_and_deletes_nothing() -> None:
    for _ in range(4):
        _job()
    _job(age=DAY)
    _job(JobStatus.RUNNING, age=None)
    assert prune(WEEK, dry_run=True) == 4
    assert prune(WEEK, statuses=["FAILED"], dry_run=True) == 0
    assert _left(Job) == 6 and _left(Journal) == 12


def test_children_of_active_parents_and_parents_of_active_children_are_kept() -> None:
    running_parent = _job(JobStatus.RUNNING, age=None)
    child_of_running = _job(parent=running_parent)
    finished_parent = _job()
    running_child = _job(JobStatus.RUNNING, age=None, parent=finished_parent)
    assert prune(WEEK) == 0
    assert _left(Job) == 4
    assert Job.objects.get(pk=running_child.pk).parent_id == finished_parent.pk
    assert Journal.objects.filter(job=child_of_running).count() == 2


def test_finished_families_go_and_references_from_kept_jobs_are_cleared() -> None:
    parent = _job()
    old_child = _job(parent=parent)
    young_child = _job(age=DAY, parent=parent)
    step = Activity.objects.create(job=young_child, seq=2, kind="CHILD", name="t", child=old_child)
    assert prune(WEEK) == 2
    young_child.refresh_from_db()
    step.refresh_from_db()
    assert young_child.parent_id is None
    assert step.child_id is None
    assert set(Job.objects.values_list("pk", flat=True)) == {young_child.pk}


def test_rows_locked_by_another_transaction_are_skipped_not_waited_on() -> None:
    locked, free = _job(), _job()
    with connect_raw() as other:
        other.execute("BEGIN")
        other.execute(f"SELECT 1 FROM {Job._meta.db_table} WHERE id = %s FOR UPDATE", [locked.pk])
        assert prune(WEEK) == 1
        other.execute("ROLLBACK")
    assert list(Job.objects.values_list("pk", flat=True)) == [locked.pk]
    assert not Job.objects.filter(pk=free.pk).exists()
    assert prune(WEEK) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"older_than": -DAY}, ValueError, "must not be negative"),
        ({"older_than": 7}, TypeError, "must be a timedelta"),
        ({"older_than": WEEK, "statuses": ["RUNNING"]}, ValueError, "only finished jobs.*RUNNING"),
        ({"older_than": WEEK, "statuses": []}, ValueError, "only finished jobs"),
        ({"older_than": WEEK, "batch_size": 0}, ValueError, "batch_size must be a positive"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, Any], error: type, message: str) -> None:
    _job()
    with pytest.raises(error, match=message):
        prune(**kwargs)
    assert _left(Job) == 1


# -- the command ----------------------------------------------------------------------


def _command(*args: str) -> str:
    out = io.StringIO()
    call_command("hotmesh_prune", *args, stdout=out)
    return out.getvalue()


def test_command_deletes_and_reports() -> None:
    for status in ("SUCCESSFUL", "FAILED", "CANCELLED"):
        _job(status)
    _job(age=DAY)
    assert "Would delete 3 jobs" in _command("--older-than", "7d", "--dry-run")
    assert _left(Job) == 4
    out = _command("--older-than", "7d", "--status", "failed", "--status", "CANCELLED")
    assert "Deleted 2 jobs (FAILED, CANCELLED) finished more than 7 days" in out
    assert "Deleted 1 job (SUCCESSFUL, FAILED, CANCELLED)" in _command(
        "--older-than=168h", "--batch-size", "1"
    )
    assert "Deleted 1 job" in _command("--older-than", "30s")
    assert _left(Job) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "7x"], "'7x' is not a duration; give a number and a unit"),
        (["--older-than", "week"], "is not a duration"),
        (["--older-than=-7d"], "must not be negative"),
        (["--older-than", "7d", "--status", "RUNNING"], "'RUNNING' is not a finished status"),
        (["--older-than", "7d", "--batch-size", "0"], "must be at least 1"),
        (["--older-than", "7d", "--batch-size", "ten"], "'ten' is not an integer"),
        ([], "--older-than"),
    ],
)
def test_command_refuses_bad_flags(args: list[str], message: str) -> None:
    _job()
    with pytest.raises(CommandError, match=message):
        call_command("hotmesh_prune", *args, stdout=io.StringIO())
    assert _left(Job) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", datetime.timedelta(seconds=30)),
        ("15m", datetime.timedelta(minutes=15)),
        ("12h", datetime.timedelta(hours=12)),
        ("7d", datetime.timedelta(days=7)),
        ("2w", datetime.timedelta(weeks=2)),
        ("1.5h", datetime.timedelta(minutes=90)),
        (" 7D ", datetime.timedelta(days=7)),
        ("0s", datetime.timedelta(0)),
    ],
)
def test_duration_parses(text: str, expected: datetime.timedelta) -> None:
    assert duration(text) == expected


@pytest.mark.parametrize("text", ["", "7", "d", "7 days", "-1d", "1e3s", "nan", "9" * 30 + "w"])
def test_duration_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        duration(text)


# -- automatic pruning ----------------------------------------------------------------


def test_auto_prune_is_off_by_default() -> None:
    _job()
    assert auto_prune() == 0
    assert _left(Job) == 1


@override_settings(HOTMESH_PRUNE_AFTER_SECONDS=3600)
def test_auto_prune_deletes_per_the_setting_at_most_once_a_minute() -> None:
    _job(age=2 * DAY)
    young = _job(age=datetime.timedelta(minutes=5))
    assert auto_prune() == 1
    _job(age=2 * DAY)
    assert auto_prune() == 0  # rate-limited in this process
    prune_mod.reset_process_state()
    assert auto_prune() == 1
    assert list(Job.objects.values_list("pk", flat=True)) == [young.pk]


@override_settings(HOTMESH_PRUNE_AFTER_SECONDS=3600)
def test_auto_prune_yields_to_another_worker_holding_the_lock() -> None:
    _job()
    with connect_raw() as other:
        other.execute("BEGIN")
        other.execute("SELECT pg_advisory_xact_lock(%s)", [PRUNE_LOCK_KEY])
        assert auto_prune() == 0
        other.execute("ROLLBACK")
    assert _left(Job) == 1


@override_settings(HOTMESH_PRUNE_AFTER_SECONDS=3600)
def test_auto_prune_comes_back_next_beat_when_out_of_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for _ in range(3):
        _job()
    real = prune_mod._prune

    def small_batches(*args: Any, **kwargs: Any) -> tuple[int, bool]:
        # Batches of one, and out of time after each.
        return real(args[0], args[1], 1, **{**kwargs, "max_seconds": 0})

    monkeypatch.setattr(prune_mod, "_prune", small_batches)
    assert auto_prune() == 1  # one batch, then out of time
    assert auto_prune() == 1  # not rate-limited: work was left
    assert auto_prune() == 1
    assert auto_prune() == 0
    assert _left(Job) == 0


@pytest.mark.parametrize("value", [0, -5, "3600", True])
def test_auto_prune_logs_a_bad_setting_and_does_nothing(
    value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _job()
    with (
        override_settings(HOTMESH_PRUNE_AFTER_SECONDS=value),
        caplog.at_level(logging.ERROR, logger="hotmesh_django.engine.prune"),
    ):
        assert auto_prune() == 0
    assert "HOTMESH_PRUNE_AFTER_SECONDS must be a positive number" in caplog.text
    assert _left(Job) == 1
