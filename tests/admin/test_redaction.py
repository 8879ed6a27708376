"""Secrets are masked everywhere the admin shows stored values; published state shows."""

from __future__ import annotations

import logging

import pytest
from django.test import Client, override_settings
from django.urls import reverse

from hotmesh_django.models import Job, JobStatus, JournalEvent
from hotmesh_django.redaction import MASK
from tests.admin.factories import (
    ActivityFactory,
    FailedJobFactory,
    JobFactory,
    JournalFactory,
    SignalFactory,
    StreamFactory,
)
from tests.conftest import InProcessWorker, wait_until
from tests.integration import codec_defs as d

SECRET = "s3cr3t-value"
TRACE = f"Traceback (most recent call last):\nValueError: login {{'password': '{SECRET}'}}\n"


def _secret_job() -> Job:
    job = FailedJobFactory(
        workflow_id="leaky",
        input={"args": [{"user": "bob", "password": SECRET}], "kwargs": {"api_key": SECRET}},
        output={"access_token": SECRET, "ok": True},
        state={"progress": 3, "client_secret": SECRET},
        search={"customer": "acme", "token": SECRET},
        error={
            "type": "ValueError",
            "message": f"login failed password={SECRET}",
            "traceback": TRACE,
        },
    )
    ActivityFactory(
        job=job,
        seq=1,
        status=JobStatus.FAILED,
        error={"type": "ValueError", "message": f"Authorization: Bearer {SECRET}"},
    )
    JournalFactory(
        job=job,
        event=JournalEvent.SIGNAL_RECEIVED,
        name="go",
        data={"payload": {"password": SECRET}, "by": "admin"},
    )
    return job


def _pages(client: Client, job: Job) -> dict[str, str]:
    step = job.activities.get()
    pages = {
        "list": reverse("admin:hotmesh_django_job_changelist"),
        "detail": reverse("admin:hotmesh_django_job_change", args=[job.pk]),
        "activity": reverse("admin:hotmesh_django_activity_change", args=[step.pk]),
        "journal": reverse("admin:hotmesh_django_journal_change", args=[job.journal.get().pk]),
        "signal": reverse(
            "admin:hotmesh_django_signal_change",
            args=[SignalFactory(job=job, payload={"pin_password": SECRET}).pk],
        ),
        "stream": reverse(
            "admin:hotmesh_django_stream_change",
            args=[StreamFactory(job=job, payload={"args": [{"token": SECRET}]}).pk],
        ),
    }
    out = {}
    for name, url in pages.items():
        response = client.get(url)
        assert response.status_code == 200, name
        out[name] = response.content.decode()
    return out


@pytest.mark.django_db
def test_no_admin_page_shows_a_secret(admin_client: Client) -> None:
    job = _secret_job()
    pages = _pages(admin_client, job)
    for name, html in pages.items():
        assert SECRET not in html, name
    detail = pages["detail"]
    assert detail.count(MASK) >= 6  # input, kwargs, output, state, search, error, journal
    assert "&quot;user&quot;: &quot;bob&quot;" in detail  # the rest is shown
    assert "&quot;progress&quot;: 3" in detail
    assert MASK in pages["list"]  # the error in the status tooltip
    for name in ("activity", "journal", "signal", "stream"):
        assert MASK in pages[name], name


@pytest.mark.django_db
def test_stored_data_is_unchanged(admin_client: Client) -> None:
    job = _secret_job()
    _pages(admin_client, job)
    job.refresh_from_db()
    assert job.input["args"][0]["password"] == SECRET
    assert job.state["client_secret"] == SECRET


@pytest.mark.django_db
@override_settings(HOTMESH_REDACT_KEYS=[])
def test_with_redaction_off_the_admin_shows_everything(admin_client: Client) -> None:
    job = _secret_job()
    detail = _pages(admin_client, job)["detail"]
    assert SECRET in detail and MASK not in detail


@pytest.mark.django_db
def test_published_state_is_shown_pretty_and_escaped(admin_client: Client) -> None:
    job = JobFactory(
        status=JobStatus.WAITING,
        state={"stage": "<script>alert(1)</script>", "progress": 2},
    )
    html = admin_client.get(reverse("admin:hotmesh_django_job_change", args=[job.pk]))
    text = html.content.decode()
    assert "Published state" in text
    assert '<pre class="hm-json">{\n  &quot;stage&quot;: &quot;&lt;script&gt;' in text
    assert "<script>alert(1)</script>" not in text


@pytest.mark.django_db
def test_no_state_section_until_the_workflow_publishes(admin_client: Client) -> None:
    job = JobFactory(status=JobStatus.WAITING)
    html = admin_client.get(reverse("admin:hotmesh_django_job_change", args=[job.pk]))
    assert "Published state" not in html.content.decode()


@pytest.mark.django_db(transaction=True)
def test_state_published_by_a_real_workflow_shows_in_the_admin(
    worker: InProcessWorker, admin_client: Client
) -> None:
    handle = d.waits.start(d.SECRET)
    job = Job.objects.get(workflow_id=handle.id)
    wait_until(lambda: Job.objects.get(pk=job.pk).state)
    html = admin_client.get(reverse("admin:hotmesh_django_job_change", args=[job.pk]))
    text = html.content.decode()
    assert "Published state" in text
    assert f"&quot;note&quot;: &quot;{d.MARK}&quot;" in text
    assert f"pw-{d.MARK}" not in text and MASK in text
    handle.signal("go", 1)
    assert handle.result(timeout=30)["secret"] == d.SECRET  # the workflow had the real value


@pytest.mark.django_db(transaction=True)
def test_the_worker_logs_arguments_and_results_with_secrets_masked(
    worker: InProcessWorker, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="hotmesh_django"):
        result = d.shout.start(d.SECRET).result(timeout=30)
    assert result["echo"]["password"] == f"pw-{d.MARK}"  # the activity had the real value
    lines = [r.getMessage() for r in caplog.records if "activity " in r.getMessage()]
    assert any(
        line.startswith("activity start") and f'"note": "{d.MARK}"' in line for line in lines
    )
    assert any(
        line.startswith("activity done") and f'"password": "{MASK}"' in line for line in lines
    )
    assert f"pw-{d.MARK}" not in caplog.text
