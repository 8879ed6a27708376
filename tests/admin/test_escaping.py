"""User-supplied values are escaped everywhere the admin shows them."""

from __future__ import annotations

import datetime
import json

import pytest
from django.urls import reverse
from django.utils import timezone

from hotmesh_django.models import JobStatus, JournalEvent, StepKind, StreamStatus
from tests.admin.factories import (
    ActivityFactory,
    JobFactory,
    JournalFactory,
    SignalFactory,
    StreamFactory,
    WorkerFactory,
)

pytestmark = pytest.mark.django_db

XSS = "<script>alert(1)</script>"
ATTR = '"><img src=x onerror=alert(2)>'


def assert_inert(html: str) -> None:
    assert XSS not in html
    assert "<script>alert" not in html
    assert "<img src=x" not in html


@pytest.fixture
def hostile_job():
    now = timezone.now()
    parent = JobFactory(workflow_id=f"parent-{XSS}", name=XSS, status=JobStatus.WAITING)
    job = JobFactory(
        workflow_id=f"wid-{XSS}{ATTR}",
        name=f"name-{XSS}",
        queue=f"q-{XSS}",
        status=JobStatus.WAITING,
        started_at=now - datetime.timedelta(seconds=3),
        parent=parent,
        parent_step=1,
        input={"args": [XSS, ATTR], "kwargs": {XSS: XSS}},
        output={"html": XSS},
        error={"type": XSS, "message": f"message {XSS}", "traceback": f"Traceback {XSS}"},
        search={XSS: XSS, "customer": ATTR},
    )
    child = JobFactory(workflow_id=f"child-{XSS}", parent=job, parent_step=3, name=XSS)
    ActivityFactory(
        job=job,
        seq=1,
        name=f"act-{XSS}",
        status=JobStatus.FAILED,
        attempts=2,
        error={"type": XSS, "message": XSS},
        started_at=now,
        finished_at=now,
    )
    ActivityFactory(
        job=job,
        seq=2,
        kind=StepKind.SIGNAL,
        name=f"sig-{XSS}",
        status=JobStatus.WAITING,
        wake_at=now + datetime.timedelta(minutes=5),
    )
    ActivityFactory(
        job=job, seq=3, kind=StepKind.CHILD, name=XSS, child=child, status=JobStatus.RUNNING
    )
    JournalFactory(
        job=job,
        step=1,
        event=JournalEvent.STEP_RETRIED,
        name=XSS,
        attempt=1,
        data={"error": {"message": XSS}, "delay": 1},
    )
    JournalFactory(
        job=job, event=JournalEvent.SIGNAL_RECEIVED, name=f"sig-{XSS}", data={"payload": XSS}
    )
    SignalFactory(job=job, name=f"sig-{XSS}", payload={"x": XSS})
    StreamFactory(job=job, queue=f"q-{XSS}", name=XSS, status=StreamStatus.READY)
    StreamFactory(
        job=job,
        queue=f"q-{XSS}",
        name=XSS,
        step=1,
        kind="STEP",
        status=StreamStatus.SCHEDULED,
        visible_at=now + datetime.timedelta(seconds=30),
    )
    WorkerFactory(host=XSS, queues=[f"q-{XSS}"])
    return job


def test_job_pages_escape_everything(admin_client, hostile_job) -> None:
    pages = [
        reverse("admin:hotmesh_django_job_changelist"),
        reverse("admin:hotmesh_django_job_changelist") + "?q=" + XSS,
        reverse("admin:hotmesh_django_job_changelist") + "?q=customer%3D" + ATTR,
        reverse("admin:hotmesh_django_job_change", args=[hostile_job.pk]),
        reverse("admin:hotmesh_django_job_change", args=[hostile_job.parent_id]),
        reverse("admin:hotmesh_django_job_signal", args=[hostile_job.pk]),
        reverse("admin:hotmesh_django_job_queues"),
        reverse("admin:hotmesh_django_job_changelist") + "?queue=q-" + XSS,
    ]
    for model in ("activity", "journal", "stream", "signal", "worker"):
        pages.append(reverse(f"admin:hotmesh_django_{model}_changelist"))
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
        assert_inert(response.content.decode())
    detail = admin_client.get(pages[3]).content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in detail  # shown, as text
    assert "Waiting for signal <code>sig-&lt;script&gt;" in detail  # the why panel


def test_bulk_form_and_messages_escape(admin_client, hostile_job) -> None:
    changelist = reverse("admin:hotmesh_django_job_changelist")
    response = admin_client.post(
        changelist,
        {
            "action": "send_signal",
            "_selected_action": [hostile_job.pk],
        },
    )
    assert_inert(response.content.decode())
    response = admin_client.post(
        changelist,
        {
            "action": "send_signal",
            "_selected_action": [hostile_job.pk],
            "apply": "1",
            "name": XSS,
            "payload": json.dumps(ATTR),
        },
        follow=True,
    )
    html = response.content.decode()
    assert "1 job sent signal &lt;script&gt;" in html
    assert_inert(html)
    detail = admin_client.get(reverse("admin:hotmesh_django_job_change", args=[hostile_job.pk]))
    assert_inert(detail.content.decode())


def test_signal_form_errors_escape_input(admin_client, hostile_job) -> None:
    url = reverse("admin:hotmesh_django_job_signal", args=[hostile_job.pk])
    response = admin_client.post(url, {"name": XSS, "payload": XSS})
    assert response.status_code == 400
    assert_inert(response.content.decode())
