"""Cron schedules: slot maths, validation, exactly-once firing, missed slots."""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, connections

import hotmesh_django as hm
from hotmesh_django import registry
from hotmesh_django.engine import schedules
from hotmesh_django.engine.notify import connect_raw
from hotmesh_django.engine.schedules import (
    SCHEDULE_LOCK_KEY,
    next_run_after,
    schedule_workflow_id,
    set_enabled,
    sync_declared,
    tick,
    trigger_now,
    validate_schedule,
)
from hotmesh_django.models import Job, JobStatus, Schedule
from tests.conftest import InProcessWorker
from tests.integration import schedule_defs

UTC = datetime.UTC
PARIS = ZoneInfo("Europe/Paris")


def _utc(*args: int) -> datetime.datetime:
    return datetime.datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def _db_now() -> datetime.datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        return cursor.fetchone()[0]  # type: ignore[index,no-any-return]


def _slot_id(name: str, slot: datetime.datetime) -> str:
    return f"schedule:{name}:{slot.astimezone(UTC).isoformat()}"


@pytest.fixture(autouse=True)
def _fresh_process_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Start each test as a new process whose declared schedules are already synced,
    so the declared "sched.daily" row only appears in the tests about syncing."""
    schedules.reset_process_state()
    monkeypatch.setattr(schedules, "_synced", True)
    yield
    schedules.reset_process_state()


# -- slot maths and validation -------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "tz", "after", "expected"),
    [
        # Winter in Paris is UTC+1, summer UTC+2.
        ("0 9 * * *", "Europe/Paris", _utc(2026, 1, 15, 12), _utc(2026, 1, 16, 8)),
        ("0 9 * * *", "Europe/Paris", _utc(2026, 7, 15, 6), _utc(2026, 7, 15, 7)),
        # Strictly after: a time on the slot gives the next slot.
        ("0 9 * * *", "Europe/Paris", _utc(2026, 7, 15, 7), _utc(2026, 7, 16, 7)),
        # Across the spring-forward night (29 March 2026) the wall clock is kept.
        ("0 9 * * *", "Europe/Paris", _utc(2026, 3, 28, 12), _utc(2026, 3, 29, 7)),
        # 02:30 does not exist that night in Paris: it fires at 03:00 (01:00 UTC).
        ("30 2 * * *", "Europe/Paris", _utc(2026, 3, 28, 12), _utc(2026, 3, 29, 1)),
        ("0 9 * * *", "UTC", _utc(2026, 1, 15, 12), _utc(2026, 1, 16, 9)),
        ("*/5 * * * *", "UTC", _utc(2026, 1, 15, 12, 2, 30), _utc(2026, 1, 15, 12, 5)),
        ("0 9 * * 1-5", "America/New_York", _utc(2026, 1, 16, 15), _utc(2026, 1, 19, 14)),
        ("@daily", "Asia/Tokyo", _utc(2026, 1, 15, 12), _utc(2026, 1, 15, 15)),
    ],
)
def test_next_run_after(
    cron: str, tz: str, after: datetime.datetime, expected: datetime.datetime
) -> None:
    got = next_run_after(cron, tz, after)
    assert got == expected
    assert got.utcoffset() == datetime.timedelta(0)


def test_next_run_after_accepts_any_aware_datetime() -> None:
    after = datetime.datetime(2026, 1, 15, 13, tzinfo=PARIS)  # 12:00 UTC
    assert next_run_after("0 9 * * *", "Europe/Paris", after) == _utc(2026, 1, 16, 8)
    with pytest.raises(ValueError, match="aware"):
        next_run_after("0 9 * * *", "UTC", datetime.datetime(2026, 1, 15))  # noqa: DTZ001


@pytest.mark.parametrize("cron", ["*/5 * * * *", "0 9 * * 1-5", "@hourly", " 0 0 1 1 * "])
def test_validate_schedule_accepts(cron: str) -> None:
    assert validate_schedule(cron, "Europe/Paris") == PARIS


@pytest.mark.parametrize(
    ("cron", "tz", "message"),
    [
        ("61 * * * *", "UTC", r"Invalid cron expression '61 \* \* \* \*': .*out of range"),
        ("* * * *", "UTC", "needs 5 fields .* not 4"),
        ("* * * * * *", "UTC", "needs 5 fields .* not 6"),
        ("every day", "UTC", "needs 5 fields"),
        ("a b c d e", "UTC", "Invalid cron expression 'a b c d e'"),
        ("@sometimes", "UTC", "unknown alias"),
        ("", "UTC", "must be a non-empty string"),
        (None, "UTC", "must be a non-empty string"),
        ("0 9 * * *", "Mars/Olympus", "Unknown timezone 'Mars/Olympus': use an IANA name"),
        ("0 9 * * *", "../etc/passwd", "Unknown timezone"),
        ("0 9 * * *", "", "timezone must be a non-empty string"),
        ("0 9 * * *", 2, "timezone must be a non-empty string"),
    ],
)
def test_validate_schedule_refuses_with_a_clear_message(cron: Any, tz: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_schedule(cron, tz)


def test_decorator_records_the_schedule() -> None:
    assert schedule_defs.daily.schedule == "0 9 * * *"
    assert schedule_defs.daily.timezone == "Europe/Paris"
    assert schedule_defs.ping.schedule is None
    assert schedule_defs.ping.timezone == "UTC"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schedule": "61 * * * *"}, "Invalid cron expression '61 \\* \\* \\* \\*'"),
        ({"schedule": "0 9 * *"}, "needs 5 fields"),
        ({"schedule": "0 9 * * *", "timezone": "Europe/Pariss"}, "Unknown timezone"),
    ],
)
def test_decorator_refuses_a_bad_schedule(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        hm.workflow(name="sched.bad", **kwargs)
    assert not registry.has_workflow("sched.bad")


@pytest.mark.django_db(transaction=True)
def test_system_check_warns_of_bad_rows_only_with_database_checks() -> None:
    """A bad row is data: it warns on `check --database` and migrate, and never
    stops a command (it once failed every manage.py command, the worker's too)."""
    from django.core import checks
    from django.core.management import call_command

    Schedule.objects.create(name="ok", workflow="sched.ping", cron="0 9 * * *")
    Schedule.objects.create(name="bad-cron", workflow="sched.ping", cron="0 25 * * *")
    Schedule.objects.create(name="bad-tz", workflow="sched.ping", cron="0 9 * * *", timezone="X")
    # As every command runs them: Django passes all aliases to untagged checks.
    assert [m.id for m in checks.run_checks() if m.id.startswith("hotmesh")] == []
    call_command("check")  # raises SystemCheckError on an error
    found = [m for m in checks.run_checks(databases=["default"]) if m.id.startswith("hotmesh")]
    assert [m.id for m in found] == ["hotmesh.W010", "hotmesh.W010"]
    text = " ".join(m.msg for m in found)
    assert "Schedule 'bad-cron': Invalid cron expression '0 25 * * *'" in text
    assert "Schedule 'bad-tz': Unknown timezone 'X'" in text
    call_command("check", "--database", "default")


def test_long_names_still_fit_a_workflow_id() -> None:
    name = "n" * 255
    first = schedule_workflow_id(name, "2026-01-01T00:00:00+00:00")
    assert len(first) == 255
    assert first == schedule_workflow_id(name, "2026-01-01T00:00:00+00:00")
    assert first != schedule_workflow_id("n" * 254 + "m", "2026-01-01T00:00:00+00:00")
    assert schedule_workflow_id("x", "s") == "schedule:x:s"


# -- declared schedules --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_sync_declared_creates_the_row_then_keeps_enabled_and_follows_the_code() -> None:
    now = _utc(2026, 1, 15, 12)
    assert sync_declared(now=now) >= 1
    row = Schedule.objects.get(name="sched.daily")
    assert (row.workflow, row.cron, row.timezone) == ("sched.daily", "0 9 * * *", "Europe/Paris")
    assert row.enabled and row.next_run_at == _utc(2026, 1, 16, 8)
    assert sync_declared(now=now) == 0  # nothing changed

    # Disabled in the admin and its cron edited: the flag stays, the code's cron wins.
    Schedule.objects.filter(pk=row.pk).update(enabled=False, cron="*/5 * * * *", args=["x"])
    assert sync_declared(now=_utc(2026, 7, 1)) == 1
    row.refresh_from_db()
    assert not row.enabled and row.args == ["x"]
    assert row.cron == "0 9 * * *" and row.next_run_at == _utc(2026, 7, 1, 7)


@pytest.mark.django_db(transaction=True)
def test_a_schedule_removed_from_the_code_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A workflow that no longer declares schedule= once went on firing forever."""
    import dataclasses

    from hotmesh_django import registry

    now = _utc(2026, 1, 15, 12)
    sync_declared(now=now)
    assert Schedule.objects.get(name="sched.daily").declared
    # Made in the admin, for a workflow that declares nothing: the admin's to keep.
    Schedule.objects.create(name="sched.ping", workflow="sched.ping", cron="0 * * * *")
    daily = registry.get_workflow("sched.daily")
    monkeypatch.setitem(
        registry._workflows, "sched.daily", dataclasses.replace(daily, schedule=None)
    )
    assert sync_declared(now=now) == 1
    assert set(Schedule.objects.values_list("name", flat=True)) == {"sched.ping"}
    assert sync_declared(now=now) == 0


@pytest.mark.django_db(transaction=True)
def test_first_tick_of_a_process_syncs_declared_schedules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(schedules, "_synced", False)
    assert tick() == 0
    assert Schedule.objects.filter(name="sched.daily").exists()
    assert schedules._synced
    Schedule.objects.all().delete()
    tick()
    assert not Schedule.objects.exists()  # once per process


# -- tick ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_tick_starts_a_due_schedule_once_and_moves_it_to_the_next_slot() -> None:
    now = _db_now()
    slot = now - datetime.timedelta(minutes=1)
    Schedule.objects.create(
        name="ping",
        workflow="sched.ping",
        cron="0 0 1 1 *",
        args=["from-cron"],
        next_run_at=slot,
    )
    assert tick() == 1
    job = Job.objects.get()
    assert job.workflow_id == _slot_id("ping", slot)
    assert job.name == "sched.ping" and job.input["args"] == ["from-cron"]
    row = Schedule.objects.get()
    assert row.last_run_at == slot
    assert row.next_run_at == datetime.datetime(now.year + 1, 1, 1, tzinfo=UTC)
    assert tick() == 0
    assert Job.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_tickers_fire_each_slot_exactly_once() -> None:
    slot = _db_now() - datetime.timedelta(seconds=1)
    Schedule.objects.bulk_create(
        [
            Schedule(name=f"ping-{i}", workflow="sched.ping", cron="0 0 1 1 *", next_run_at=slot)
            for i in range(20)
        ]
    )
    callers = 8
    barrier = threading.Barrier(callers)
    fired = [0] * callers
    errors: list[BaseException] = []

    def ticker(slot_index: int) -> None:
        try:
            barrier.wait()
            for _ in range(10):
                fired[slot_index] += tick()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()  # each thread owns its own connection

    threads = [threading.Thread(target=ticker, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert sum(fired) == 20
    assert sorted(Job.objects.values_list("workflow_id", flat=True)) == sorted(
        _slot_id(f"ping-{i}", slot) for i in range(20)
    )
    assert not Schedule.objects.filter(last_run_at__isnull=True).exists()


@pytest.mark.django_db(transaction=True)
def test_tick_does_nothing_while_another_connection_holds_the_lock() -> None:
    Schedule.objects.create(
        name="ping", workflow="sched.ping", cron="0 0 1 1 *", next_run_at=_db_now()
    )
    with connect_raw() as other:
        other.execute("BEGIN")
        other.execute("SELECT pg_advisory_xact_lock(%s)", [SCHEDULE_LOCK_KEY])
        assert tick() == 0
        other.execute("ROLLBACK")
    assert not Job.objects.exists()
    assert tick() == 1


@pytest.mark.django_db(transaction=True)
def test_tick_skips_a_schedule_row_locked_by_an_admin_edit() -> None:
    due = _db_now()
    locked = Schedule.objects.create(
        name="locked", workflow="sched.ping", cron="0 0 1 1 *", next_run_at=due
    )
    Schedule.objects.create(name="free", workflow="sched.ping", cron="0 0 1 1 *", next_run_at=due)
    with connect_raw() as other:
        other.execute("BEGIN")
        other.execute(
            f"SELECT 1 FROM {Schedule._meta.db_table} WHERE id = %s FOR UPDATE", [locked.pk]
        )
        assert tick() == 1
        other.execute("ROLLBACK")
    assert list(Job.objects.values_list("workflow_id", flat=True)) == [_slot_id("free", due)]
    assert tick() == 1  # its turn comes on the next beat


@pytest.mark.django_db(transaction=True)
def test_missed_slots_after_downtime_run_once() -> None:
    now = _utc(2026, 1, 15, 12)
    first_missed = _utc(2026, 1, 10, 8)  # 09:00 in Paris, five days ago
    Schedule.objects.create(
        name="daily-ping",
        workflow="sched.ping",
        cron="0 9 * * *",
        timezone="Europe/Paris",
        next_run_at=first_missed,
    )
    assert tick(now) == 1
    assert list(Job.objects.values_list("workflow_id", flat=True)) == [
        _slot_id("daily-ping", first_missed)
    ]
    row = Schedule.objects.get()
    assert row.last_run_at == first_missed
    assert row.next_run_at == _utc(2026, 1, 16, 8)
    assert tick(now) == 0
    assert tick(now + datetime.timedelta(hours=3)) == 0
    assert tick(_utc(2026, 1, 16, 8)) == 1  # the next slot, on time
    assert Job.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_repeated_start_of_a_slot_finds_the_same_job() -> None:
    slot = _db_now()
    row = Schedule.objects.create(
        name="ping", workflow="sched.ping", cron="0 0 1 1 *", next_run_at=slot
    )
    assert tick() == 1
    # As if the row were restored from a backup taken before the slot fired.
    Schedule.objects.filter(pk=row.pk).update(next_run_at=slot, last_run_at=None)
    assert tick() == 1
    assert Job.objects.filter(workflow_id=_slot_id("ping", slot)).count() == 1
    assert Job.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_disabled_schedules_do_not_fire() -> None:
    Schedule.objects.create(
        name="off",
        workflow="sched.ping",
        cron="* * * * *",
        enabled=False,
        next_run_at=_db_now() - datetime.timedelta(days=1),
    )
    assert tick() == 0
    assert not Job.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_unknown_workflow_is_logged_once_and_left_due(caplog: pytest.LogCaptureFixture) -> None:
    due = _db_now() - datetime.timedelta(minutes=1)
    Schedule.objects.create(
        name="ghost", workflow="no.such.flow", cron="* * * * *", next_run_at=due
    )
    Schedule.objects.create(name="ping", workflow="sched.ping", cron="0 0 1 1 *", next_run_at=due)
    with caplog.at_level(logging.ERROR, logger="hotmesh_django.engine.schedules"):
        assert tick() == 1
        assert tick() == 0
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "name=ghost workflow=no.such.flow" in errors[0].getMessage()
    assert "Unknown workflow 'no.such.flow'" in errors[0].getMessage()
    ghost = Schedule.objects.get(name="ghost")
    assert ghost.next_run_at == due and ghost.last_run_at is None


@pytest.mark.django_db(transaction=True)
def test_invalid_rows_and_failed_starts_are_logged_and_left_due(
    caplog: pytest.LogCaptureFixture,
) -> None:
    due = _db_now() - datetime.timedelta(minutes=1)
    Schedule.objects.create(
        name="bad-cron", workflow="sched.ping", cron="0 25 * * *", next_run_at=due
    )
    Schedule.objects.create(
        name="bad-args",
        workflow="sched.ping",
        cron="* * * * *",
        args={"not": "a list"},
        next_run_at=due,
    )
    with caplog.at_level(logging.ERROR, logger="hotmesh_django.engine.schedules"):
        assert tick() == 0
    text = caplog.text
    assert "schedule invalid name=bad-cron" in text
    assert "schedule start failed name=bad-args" in text
    assert not Job.objects.exists()
    assert set(Schedule.objects.values_list("next_run_at", flat=True)) == {due}


@pytest.mark.django_db(transaction=True)
def test_a_row_without_next_run_counts_from_now() -> None:
    Schedule.objects.create(name="fresh", workflow="sched.ping", cron="0 0 1 1 *")
    assert tick() == 0
    row = Schedule.objects.get()
    assert row.next_run_at == datetime.datetime(_db_now().year + 1, 1, 1, tzinfo=UTC)


@pytest.mark.django_db(transaction=True)
def test_a_fired_schedule_runs_to_success(worker: InProcessWorker) -> None:
    Schedule.objects.create(
        name="ping",
        workflow="sched.ping",
        cron="0 0 1 1 *",
        kwargs={"tag": "ran"},
        next_run_at=_db_now(),
    )
    tick()  # the worker's heartbeat may have fired it first
    job = Job.objects.get(workflow_id__startswith="schedule:ping:")
    assert hm.get_handle(job.workflow_id).result(timeout=10) == "pong ran"


# -- admin operations ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_trigger_now_starts_a_manual_run_and_keeps_the_next_slot() -> None:
    upcoming = _db_now() + datetime.timedelta(days=3)
    Schedule.objects.create(
        name="ping",
        workflow="sched.ping",
        cron="0 0 1 1 *",
        enabled=False,
        args=["manual"],
        next_run_at=upcoming,
    )
    first, second = trigger_now("ping"), trigger_now("ping")
    assert first.id.startswith("schedule:ping:manual:") and first.id != second.id
    assert Job.objects.filter(status=JobStatus.READY).count() == 2
    assert Job.objects.get(workflow_id=first.id).input["args"] == ["manual"]
    row = Schedule.objects.get()
    assert row.next_run_at == upcoming and row.last_run_at is not None


@pytest.mark.django_db(transaction=True)
def test_trigger_now_refuses_unknown_names_and_workflows() -> None:
    with pytest.raises(Schedule.DoesNotExist, match="No schedule is named 'nope'"):
        trigger_now("nope")
    Schedule.objects.create(name="ghost", workflow="no.such.flow", cron="* * * * *")
    with pytest.raises(hm.HotmeshError, match="Unknown workflow 'no.such.flow'"):
        trigger_now("ghost")
    assert not Job.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_enabling_counts_from_now_so_slots_missed_while_disabled_do_not_fire() -> None:
    stale = _db_now() - datetime.timedelta(days=30)
    Schedule.objects.create(
        name="ping", workflow="sched.ping", cron="0 0 1 1 *", enabled=False, next_run_at=stale
    )
    assert set_enabled(["ping"], True) == 1
    assert set_enabled(["ping"], True) == 0
    row = Schedule.objects.get()
    assert row.enabled and row.next_run_at > _db_now()
    assert tick() == 0
    assert set_enabled(["ping"], False) == 1
    assert not Schedule.objects.get().enabled
