"""Schedules with real worker processes: a due slot fires exactly once."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable

import pytest
from django.db import connection

import hotmesh_django as hm
from hotmesh_django.models import Job, JobStatus, Schedule
from tests.conftest import WorkerProcess, wait_until

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]

Spawn = Callable[..., WorkerProcess]


def test_three_workers_fire_a_due_slot_exactly_once(spawn_worker: Spawn) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        slot: datetime.datetime = cursor.fetchone()[0] - datetime.timedelta(seconds=1)
    # Yearly, so no second slot comes due while the test runs.
    Schedule.objects.create(
        name="ping",
        workflow="sched.ping",
        cron="0 0 1 1 *",
        kwargs={"tag": "cron"},
        next_run_at=slot,
    )
    workflow_id = f"schedule:ping:{slot.astimezone(datetime.UTC).isoformat()}"
    procs = [
        spawn_worker("--concurrency", "2", "--import", "tests.integration.schedule_defs")
        for _ in range(3)
    ]

    def fired() -> Job | None:
        for proc in procs:
            assert proc.poll() is None, proc.log()
        return Job.objects.filter(workflow_id=workflow_id, status=JobStatus.SUCCESSFUL).first()

    try:
        wait_until(fired, timeout=30)
    except AssertionError:
        logs = "\n".join(p.log()[-2000:] for p in procs)
        raise AssertionError(
            "no worker fired the schedule: does Worker._beat call schedules.tick()?\n" + logs
        ) from None
    assert hm.get_handle(workflow_id).result(timeout=5) == "pong cron"
    time.sleep(2.0)  # several more heartbeats (0.5 s each) from every worker
    assert list(Job.objects.values_list("workflow_id", flat=True)) == [workflow_id]
    row = Schedule.objects.get(name="ping")
    assert row.last_run_at == slot
    assert row.next_run_at == datetime.datetime(slot.year + 1, 1, 1, tzinfo=datetime.UTC)
    # The workers' first tick also synced the declared schedule of the module they import.
    assert Schedule.objects.filter(name="sched.daily", enabled=True).exists()
