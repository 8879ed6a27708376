"""The "why is this job not running?" panel, derived from the queue's and steps' rows."""

from __future__ import annotations

import datetime
import html
import re

import pytest
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from hotmesh_django.admin_views import diagnose
from hotmesh_django.models import Job, JobStatus, Queue, StepKind, StreamKind, StreamStatus
from tests.admin.factories import (
    ActivityFactory,
    JobFactory,
    SignalFactory,
    StreamFactory,
    WorkerFactory,
)

pytestmark = pytest.mark.django_db


def texts(job: Job) -> list[str]:
    return [html.unescape(re.sub(r"<[^>]+>", "", str(r.html))) for r in diagnose(job)]


def joined(job: Job) -> str:
    return "\n".join(texts(job))


def test_ready_job_counts_items_ahead_and_sees_no_worker() -> None:
    for priority in (0, 0, 5):
        StreamFactory(job=JobFactory(queue="emails"), queue="emails", priority=priority)
    StreamFactory(job=JobFactory(queue="emails"), queue="emails", priority=-1)  # behind
    StreamFactory(job=JobFactory(queue="other"), queue="other")  # another queue
    job = JobFactory(queue="emails")
    StreamFactory(job=job, queue="emails")
    text = joined(job)
    assert "ready in queue emails since" in text
    assert ": 3 items ahead of it." in text
    assert "No live worker serves queue emails." in text


def test_live_worker_on_every_queue_clears_the_warning() -> None:
    WorkerFactory(queues=["*"])
    job = JobFactory()
    StreamFactory(job=job)
    text = joined(job)
    assert "0 items ahead" in text and "No live worker" not in text


def test_stale_and_paused_and_busy_workers() -> None:
    job = JobFactory()
    StreamFactory(job=job)
    WorkerFactory(last_seen=timezone.now() - datetime.timedelta(hours=1))
    assert "No live worker serves queue default." in joined(job)
    worker = WorkerFactory(paused=True)
    assert "Every worker serving queue default is stopping" in joined(job)
    type(worker).objects.filter(pk=worker.pk).update(paused=False, in_flight=4, concurrency=4)
    assert "All 4 worker slots serving queue default are busy." in joined(job)


def test_paused_queue() -> None:
    WorkerFactory()
    Queue.objects.create(name="default", paused=True)
    job = JobFactory()
    StreamFactory(job=job)
    assert "Queue default is paused (since" in joined(job)
    assert "manage.py hotmesh_ctl resume default" in joined(job)


@override_settings(HOTMESH_QUEUES={"default": {"rate": "5/s"}})
def test_queue_rate_limit() -> None:
    WorkerFactory()
    Queue.objects.create(name="default", tokens=0.2, refilled_at=timezone.now())
    job = JobFactory()
    StreamFactory(job=job)
    text = joined(job)
    assert "Rate limit reached on queue default (5/s): the next start is allowed in about 1" in text
    Queue.objects.filter(name="default").update(tokens=3)
    assert "Rate limit" not in joined(job)


@override_settings(HOTMESH_QUEUES={"default": {"concurrency": 1}})
def test_queue_concurrency_limit() -> None:
    WorkerFactory()
    StreamFactory(job=JobFactory(), status=StreamStatus.RUNNING)
    job = JobFactory()
    StreamFactory(job=job)
    assert "Concurrency limit reached on queue default: 1 of 1 running." in joined(job)


def test_running_step_shows_lease_and_stale_worker() -> None:
    now = timezone.now()
    worker = WorkerFactory(host="box", pid=42)
    job = JobFactory(status=JobStatus.RUNNING)
    ActivityFactory(job=job, seq=1, name="charge", status=JobStatus.RUNNING)
    StreamFactory(
        job=job,
        kind=StreamKind.STEP,
        step=1,
        name="charge",
        status=StreamStatus.RUNNING,
        worker=worker.id,
        attempts=2,
        claimed_at=now,
        lease_expires_at=now + datetime.timedelta(seconds=20),
    )
    text = joined(job)
    assert "Step 1 charge is running: lease held by worker box:42 until" in text
    assert "(claimed" in text and "attempt 2)" in text
    type(worker).objects.filter(pk=worker.pk).update(last_seen=now - datetime.timedelta(hours=1))
    from hotmesh_django.models import Stream

    Stream.objects.filter(job=job).update(lease_expires_at=now - datetime.timedelta(seconds=5))
    text = joined(job)
    assert "The lease expired" in text and "rescue pass re-queues it" in text
    assert "Worker box:42 is stale (last heartbeat" in text


def test_waiting_for_signal_sleep_and_children() -> None:
    now = timezone.now()
    job = JobFactory(status=JobStatus.WAITING)
    ActivityFactory(
        job=job,
        seq=1,
        kind=StepKind.SLEEP,
        name="sleep",
        status=JobStatus.WAITING,
        wake_at=now + datetime.timedelta(minutes=10),
    )
    StreamFactory(
        job=job,
        kind=StreamKind.TIMER,
        step=1,
        status=StreamStatus.SCHEDULED,
        visible_at=now + datetime.timedelta(minutes=10),
    )
    ActivityFactory(
        job=job,
        seq=2,
        kind=StepKind.SIGNAL,
        name="approved",
        status=JobStatus.WAITING,
        wake_at=now + datetime.timedelta(hours=1),
    )
    JobFactory(parent=job, status=JobStatus.RUNNING, workflow_id="kid-1")
    JobFactory(parent=job, status=JobStatus.READY, workflow_id="kid-2")
    JobFactory(parent=job, status=JobStatus.SUCCESSFUL)
    SignalFactory(job=job, name="other")
    text = joined(job)
    assert re.search(r"Sleeping until .* \(in (9 min 5\d s|10 min)\) \(step 1\)\.", text)
    assert "Waiting for signal approved since" in text and "; it times out" in text
    assert "Waiting for 2 child workflows: kid-1 (RUNNING), kid-2 (READY)." in text
    assert "Signal other arrived" in text and "buffered until a step waits for it" in text
    assert "Nothing is queued" not in text


def test_scheduled_start_retry_and_deadline() -> None:
    now = timezone.now()
    later = now + datetime.timedelta(minutes=2)
    job = JobFactory(deadline_at=later + datetime.timedelta(hours=1))
    StreamFactory(job=job, kind=StreamKind.TIMER, status=StreamStatus.SCHEDULED, visible_at=later)
    StreamFactory(
        job=job, kind=StreamKind.TIMER, status=StreamStatus.SCHEDULED, visible_at=job.deadline_at
    )
    ActivityFactory(job=job, seq=1, name="charge", status=JobStatus.READY)
    StreamFactory(
        job=job,
        kind=StreamKind.STEP,
        step=1,
        name="charge",
        attempts=1,
        status=StreamStatus.SCHEDULED,
        visible_at=later,
    )
    text = joined(job)
    assert "Scheduled for" in text and "a delayed start or a timer" in text
    assert "Deadline: the workflow fails with WorkflowTimeout" in text
    assert "Retry of step 1 charge scheduled for" in text and "after attempt 1 failed" in text


def test_nothing_queued_is_a_warning() -> None:
    job = JobFactory(status=JobStatus.WAITING)
    reasons = diagnose(job)
    assert [r.level for r in reasons] == ["warning"]
    assert "no worker will pick it up" in str(reasons[0].html)


def test_parked_job_says_why() -> None:
    job = JobFactory(
        status=JobStatus.WAITING,
        error={"type": "UnknownWorkflow", "message": "Unknown workflow 'x.y'"},
    )
    StreamFactory(
        job=job,
        kind=StreamKind.TIMER,
        status=StreamStatus.SCHEDULED,
        visible_at=timezone.now() + datetime.timedelta(seconds=30),
    )
    assert "Parked: Unknown workflow 'x.y'. It looks again" in joined(job)


def test_finished_jobs_have_no_panel(admin_client) -> None:
    job = JobFactory(status=JobStatus.SUCCESSFUL)
    assert diagnose(job) == []
    page = admin_client.get(reverse("admin:hotmesh_django_job_change", args=[job.pk]))
    assert 'id="hm-why"' not in page.content.decode()


def test_panel_on_the_detail_page(admin_client) -> None:
    job = JobFactory(status=JobStatus.READY)
    StreamFactory(job=job)
    page = admin_client.get(reverse("admin:hotmesh_django_job_change", args=[job.pk]))
    content = page.content.decode()
    assert "Why is this job not running?" in content
    assert "No live worker serves queue <code>default</code>" in content
