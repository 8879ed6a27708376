"""Single and bulk actions move what they should, report skips, and need permission."""

from __future__ import annotations

from html import unescape as html_unescape

import pytest
from django.test import Client
from django.urls import reverse

from hotmesh_django.engine import control
from hotmesh_django.exceptions import StepRunning
from hotmesh_django.models import (
    Activity,
    Job,
    JobStatus,
    Journal,
    JournalEvent,
    Signal,
    StepKind,
    Stream,
    StreamKind,
    StreamStatus,
)
from tests.admin.factories import ActivityFactory, FailedJobFactory, JobFactory, StreamFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:hotmesh_django_job_changelist"


def url(name: str, job: Job) -> str:
    return reverse(f"admin:hotmesh_django_job_{name}", args=[job.pk])


def failed_job(**kwargs) -> Job:
    job = FailedJobFactory(**kwargs)
    ActivityFactory(job=job, seq=1, status=JobStatus.SUCCESSFUL)
    ActivityFactory(
        job=job,
        seq=2,
        status=JobStatus.FAILED,
        attempts=2,
        error={"type": "RuntimeError", "message": "boom"},
    )
    return job


def status(job: Job) -> str:
    job.refresh_from_db()
    return job.status


def messages_text(response) -> str:
    return " | ".join(str(m) for m in response.context["messages"])


def bulk(client: Client, action: str, jobs: list[Job], **extra) -> object:
    data = {"action": action, "_selected_action": [j.pk for j in jobs], **extra}
    return client.post(reverse(CHANGELIST), data, follow=True)


# -- single-job buttons -------------------------------------------------------------------


def test_retry_button_requeues_the_failed_step(admin_client) -> None:
    job = failed_job()
    response = admin_client.post(url("retry", job), follow=True)
    assert response.redirect_chain[-1][0] == url("change", job)
    assert "1 job re-queued." in messages_text(response)
    assert status(job) == JobStatus.READY
    assert Activity.objects.get(job=job, seq=1).status == JobStatus.SUCCESSFUL
    assert Activity.objects.get(job=job, seq=2).status == JobStatus.READY
    retried = Journal.objects.get(job=job, event=JournalEvent.RETRIED)
    assert retried.data == {"by": "admin"}


def test_cancel_and_retry_say_what_moved_with_the_children(admin_client) -> None:
    """A cancel takes the active children along and now says so; a retry revives a
    failed child, and the child's journal names the operator too."""
    parent = JobFactory(status=JobStatus.WAITING)
    children = [JobFactory(status=JobStatus.WAITING, parent=parent) for _ in range(2)]
    JobFactory(status=JobStatus.WAITING, parent=children[0])  # a grandchild
    response = admin_client.post(url("cancel", parent), follow=True)
    assert "1 job cancelled (and 3 child jobs with them)." in messages_text(response)
    assert {status(j) for j in children} == {JobStatus.CANCELLED}

    failed = failed_job()
    child = failed_job(parent=failed)
    response = admin_client.post(url("retry", failed), follow=True)
    assert "1 job re-queued." in messages_text(response)
    assert status(child) == JobStatus.READY
    assert Journal.objects.get(job=child, event=JournalEvent.RETRIED).data == {"by": "admin"}


def test_retry_button_reports_a_skip(admin_client) -> None:
    job = JobFactory(status=JobStatus.SUCCESSFUL)
    response = admin_client.post(url("retry", job), follow=True)
    assert "0 jobs re-queued; 1 skipped (not FAILED: it is SUCCESSFUL)." in messages_text(response)
    assert status(job) == JobStatus.SUCCESSFUL


def test_cancel_button(admin_client) -> None:
    job = JobFactory(status=JobStatus.WAITING)
    response = admin_client.post(url("cancel", job), follow=True)
    assert "1 job cancelled." in messages_text(response)
    assert status(job) == JobStatus.CANCELLED
    assert job.error["message"] == "Cancelled by admin."
    cancelled = Journal.objects.get(job=job, event=JournalEvent.CANCELLED)
    assert cancelled.data["by"] == "admin"
    response = admin_client.post(url("cancel", job), follow=True)
    assert "0 jobs cancelled; 1 skipped (already finished: CANCELLED)." in messages_text(response)


def test_signal_button_sends_a_json_payload(admin_client) -> None:
    job = JobFactory(status=JobStatus.WAITING)
    response = admin_client.post(
        url("signal", job), {"name": "approved", "payload": '{"by": "ops", "n": 2}'}, follow=True
    )
    assert "1 job sent signal approved." in messages_text(response)
    signal = Signal.objects.get(job=job)
    assert (signal.name, signal.payload) == ("approved", {"by": "ops", "n": 2})
    assert Stream.objects.filter(job=job, kind="TURN").exists()
    received = Journal.objects.get(job=job, event=JournalEvent.SIGNAL_RECEIVED)
    assert received.data["by"] == "admin"


def test_signal_form_rejects_bad_json_with_a_clear_error(admin_client) -> None:
    job = JobFactory(status=JobStatus.WAITING)
    response = admin_client.post(url("signal", job), {"name": "approved", "payload": "{oops"})
    assert response.status_code == 400
    html = response.content.decode()
    assert (
        "The payload is not valid JSON: Expecting property name enclosed in double quotes" in html
    )
    assert "(line 1, column 2)" in html
    response = admin_client.post(url("signal", job), {"name": "", "payload": "1"})
    assert response.status_code == 400
    assert "This field is required." in response.content.decode()


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ("NaN", "is nan, which JSON cannot represent"),
        ('{"a": -Infinity}', "is -inf, which JSON cannot represent"),
        ('"a\\u0000b"', "NUL character"),
        ("[" * 5000 + "]" * 5000, "nested"),  # too deeply (3.11), more than 200 levels (3.12+)
        ("[" * 300 + "]" * 300, "nested more than 200 levels deep"),
        ('{"__hm__": "date", "v": "x"}', "reserved key"),
    ],
)
def test_signal_forms_refuse_what_json_cannot_hold(admin_client, payload: str, error: str) -> None:
    job = JobFactory(status=JobStatus.WAITING)
    response = admin_client.post(url("signal", job), {"name": "go", "payload": payload})
    assert response.status_code == 400
    assert error in html_unescape(response.content.decode())
    response = bulk(admin_client, "send_signal", [job], apply="1", name="go", payload=payload)
    assert response.status_code == 400
    assert error in html_unescape(response.content.decode())
    assert not Signal.objects.exists()
    assert not Signal.objects.exists()


def test_signal_form_page_renders_on_get(admin_client) -> None:
    job = JobFactory(status=JobStatus.WAITING)
    response = admin_client.get(url("signal", job))
    assert response.status_code == 200
    assert 'name="payload"' in response.content.decode()


def test_signal_to_a_finished_job_is_skipped(admin_client) -> None:
    job = JobFactory(status=JobStatus.SUCCESSFUL)
    response = admin_client.post(url("signal", job), {"name": "go"}, follow=True)
    assert "0 jobs sent signal go; 1 skipped (finished: SUCCESSFUL)." in messages_text(response)
    assert not Signal.objects.exists()


def test_signal_to_an_activity_job_is_skipped(admin_client) -> None:
    """It was buffered and reported as sent, though nothing could ever take it."""
    job = JobFactory(kind="ACTIVITY", status=JobStatus.RUNNING)
    response = admin_client.post(url("signal", job), {"name": "go"}, follow=True)
    text = messages_text(response)
    assert "0 jobs sent signal go; 1 skipped (an activity job takes no signals)." in text
    assert not Signal.objects.exists()
    with pytest.raises(ValueError, match="cannot wait for signals"):
        control.send_signal(job.workflow_id, "go")


def test_rerun_button_forgets_later_steps(admin_client) -> None:
    job = failed_job()
    ActivityFactory(
        job=job, seq=3, kind=StepKind.SIGNAL, name="approved", status=JobStatus.CANCELLED
    )
    response = admin_client.post(url("rerun", job), {"step": "2"}, follow=True)
    assert "1 job re-run from step 2." in messages_text(response)
    assert status(job) == JobStatus.READY
    assert list(Activity.objects.filter(job=job).values_list("seq", flat=True)) == [1]
    assert Journal.objects.get(job=job, event=JournalEvent.RETRIED).data == {
        "from_step": 2,
        "by": "admin",
    }


def test_rerun_refuses_while_a_step_from_there_on_runs(admin_client) -> None:
    """Dropping a running step's message hid that attempt from the queue's
    concurrency limit, and the step ran twice at once (seen with a limit of 2 and four
    runs). Re-running from a later step than the running one is still allowed."""
    job = JobFactory(status=JobStatus.RUNNING)
    ActivityFactory(job=job, seq=1, status=JobStatus.SUCCESSFUL)
    ActivityFactory(job=job, seq=2, status=JobStatus.RUNNING)
    StreamFactory(job=job, kind=StreamKind.STEP, step=2, status=StreamStatus.RUNNING)
    response = admin_client.post(url("rerun", job), {"step": "1"}, follow=True)
    text = messages_text(response)
    assert "0 jobs re-run from step 1; 1 skipped (a step from 1 on is running)." in text
    assert Stream.objects.filter(job=job, status=StreamStatus.RUNNING).count() == 1
    assert Activity.objects.filter(job=job).count() == 2
    with pytest.raises(StepRunning, match="Step 2 of job .* is running"):
        control.rerun_from_step(job.workflow_id, 2)


def test_rerun_reports_missing_step_and_final_jobs(admin_client) -> None:
    job = failed_job()
    response = admin_client.post(url("rerun", job), {"step": "9"}, follow=True)
    assert "0 jobs re-run from step 9; 1 skipped (no step 9)." in messages_text(response)
    done = JobFactory(status=JobStatus.SUCCESSFUL)
    ActivityFactory(job=done, seq=1)
    response = admin_client.post(url("rerun", done), {"step": "1"}, follow=True)
    assert "1 skipped (final: SUCCESSFUL)" in messages_text(response)
    queued = JobFactory(status=JobStatus.READY)
    ActivityFactory(job=queued, seq=1)
    response = bulk(admin_client, "rerun_from_step", [done, queued], apply="1", step="1")
    assert (
        "0 jobs re-run from step 1; 2 skipped (1 final: SUCCESSFUL; 1 already queued: READY)."
        in (messages_text(response))
    )
    response = admin_client.post(url("rerun", job), {"step": "x"}, follow=True)
    assert "Not re-run: Enter a whole number." in messages_text(response)


# -- bulk actions -------------------------------------------------------------------------


def test_bulk_retry_reports_moved_and_skipped(admin_client) -> None:
    jobs = [failed_job(), failed_job(), JobFactory(status=JobStatus.SUCCESSFUL)]
    response = bulk(admin_client, "retry_failed", jobs)
    assert "2 jobs re-queued; 1 skipped (not FAILED: it is SUCCESSFUL)." in messages_text(response)
    assert [status(j) for j in jobs] == [JobStatus.READY, JobStatus.READY, JobStatus.SUCCESSFUL]


def test_bulk_actions_journal_the_acting_user(operator_client) -> None:
    retried, cancelled = failed_job(), JobFactory(status=JobStatus.WAITING)
    child = JobFactory(status=JobStatus.WAITING, parent=cancelled)
    bulk(operator_client, "retry_failed", [retried])
    bulk(operator_client, "cancel_jobs", [cancelled])
    assert Journal.objects.get(job=retried, event=JournalEvent.RETRIED).data == {"by": "operator"}
    for job in (cancelled, child):  # the cascade to children names the operator too
        assert Journal.objects.get(job=job, event=JournalEvent.CANCELLED).data["by"] == "operator"


def test_bulk_cancel_groups_skip_reasons(admin_client) -> None:
    jobs = [
        JobFactory(status=JobStatus.READY),
        JobFactory(status=JobStatus.WAITING),
        JobFactory(status=JobStatus.SUCCESSFUL),
        FailedJobFactory(),
        FailedJobFactory(),
    ]
    response = bulk(admin_client, "cancel_jobs", jobs)
    assert (
        "2 jobs cancelled; 3 skipped (2 already finished: FAILED; 1 already finished: SUCCESSFUL)."
    ) in messages_text(response)


def test_bulk_cancel_of_a_parent_and_its_child_skips_neither(admin_client) -> None:
    parent = JobFactory(status=JobStatus.WAITING)
    child = JobFactory(status=JobStatus.WAITING, parent=parent)
    JobFactory(status=JobStatus.WAITING, parent=parent)  # not selected: taken along
    response = bulk(admin_client, "cancel_jobs", [parent, child])
    assert "2 jobs cancelled (and 1 child job with them)." in messages_text(response)


def test_bulk_signal_shows_a_form_then_sends(admin_client) -> None:
    jobs = [JobFactory(status=JobStatus.WAITING), JobFactory(status=JobStatus.CANCELLED)]
    response = bulk(admin_client, "send_signal", jobs)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="payload"' in html and jobs[0].workflow_id in html
    response = bulk(admin_client, "send_signal", jobs, apply="1", name="go", payload="[1, 2")
    assert response.status_code == 400
    assert "The payload is not valid JSON" in response.content.decode()
    response = bulk(admin_client, "send_signal", jobs, apply="1", name="go", payload="[1, 2]")
    assert "1 job sent signal go; 1 skipped (finished: CANCELLED)." in messages_text(response)
    assert Signal.objects.get().payload == [1, 2]


def test_bulk_rerun_from_step(admin_client) -> None:
    jobs = [failed_job(), JobFactory(status=JobStatus.WAITING)]
    response = bulk(admin_client, "rerun_from_step", jobs)
    assert 'name="step"' in response.content.decode()
    response = bulk(admin_client, "rerun_from_step", jobs, apply="1", step="2")
    assert "1 job re-run from step 2; 1 skipped (no step 2)." in messages_text(response)


def test_bulk_select_across_is_capped(admin_client, monkeypatch) -> None:
    from hotmesh_django import admin_views

    monkeypatch.setattr(admin_views, "MAX_BULK", 2)
    jobs = [failed_job() for _ in range(3)]
    response = admin_client.post(
        reverse(CHANGELIST),
        {
            "action": "retry_failed",
            "_selected_action": [jobs[0].pk],
            "select_across": "1",
        },
        follow=True,
    )
    text = messages_text(response)
    assert "2 jobs re-queued; only the first 2 selected were processed, 1 left" in text
    assert sorted(status(j) for j in jobs) == [JobStatus.FAILED, JobStatus.READY, JobStatus.READY]


def form_fields(html: str) -> list[tuple[str, str]]:
    """The hidden inputs of the intermediate form, as a browser would post them back."""
    import re

    return [
        (html_unescape(name), html_unescape(value))
        for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html)
    ]


@pytest.mark.parametrize(
    ("action", "fields", "message"),
    [
        ("send_signal", {"name": "go", "payload": "1"}, "30 jobs sent signal go."),
        ("rerun_from_step", {"step": "1"}, "0 jobs re-run from step 1; 30 skipped"),
    ],
)
def test_bulk_form_with_select_all_posts_back_one_id(
    admin_client, settings, action: str, fields: dict[str, str], message: str
) -> None:
    """ "Select all N" re-selects by the changelist's filters, so the intermediate form
    carries one id, not all: one hidden field per job would pass DATA_UPLOAD_MAX_NUMBER_FIELDS
    (1,000 by default) and the whole action would be refused with a 400."""
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 20
    jobs = [JobFactory(status=JobStatus.WAITING, queue="wide") for _ in range(30)]
    JobFactory(status=JobStatus.WAITING, queue="other")
    changelist = reverse(CHANGELIST) + "?queue=wide"
    first = {"action": action, "_selected_action": [jobs[0].pk], "select_across": "1"}
    response = admin_client.post(changelist, first)
    assert response.status_code == 200
    html = response.content.decode()
    assert "This applies to 30 selected jobs" in html
    posted = form_fields(html)
    assert [v for k, v in posted if k == "_selected_action"] == [str(jobs[0].pk)]
    response = admin_client.post(changelist, {**dict(posted), **fields}, follow=True)
    assert response.status_code == 200
    assert message in messages_text(response)


# -- permissions and CSRF -----------------------------------------------------------------


def test_operator_with_change_job_may_act(operator_client) -> None:
    job = failed_job()
    response = operator_client.post(url("retry", job), follow=True)
    assert "1 job re-queued." in messages_text(response)


def test_workers_link_only_for_who_may_open_it(db, viewer) -> None:
    """A user who may view jobs but not workers was shown a link that gave a 403."""
    from django.contrib.auth.models import Permission

    workers = reverse("admin:hotmesh_django_worker_changelist")
    client = Client()
    client.force_login(viewer)
    pages = [
        reverse(CHANGELIST),
        reverse("admin:hotmesh_django_job_queues"),
        reverse("admin:app_list", args=["hotmesh_django"]),
    ]
    for page in pages:
        assert workers in client.get(page).content.decode(), page
    viewer.user_permissions.remove(Permission.objects.get(codename="view_worker"))
    client.force_login(viewer)  # a fresh session: permissions are cached per user object
    assert client.get(workers).status_code == 403
    for page in pages:
        assert workers not in client.get(page).content.decode(), page


def test_viewer_sees_but_cannot_act(viewer_client) -> None:
    job = failed_job()
    response = viewer_client.get(url("change", job))
    assert response.status_code == 200
    html = response.content.decode()
    assert "You can view this job but not operate it" in html
    assert url("retry", job) not in html
    response = viewer_client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    assert 'name="action"' not in response.content.decode()
    for name, data in (
        ("retry", {}),
        ("cancel", {}),
        ("rerun", {"step": "1"}),
        ("signal", {"name": "go"}),
    ):
        assert viewer_client.post(url(name, job), data).status_code == 403
    assert viewer_client.get(url("signal", job)).status_code == 403
    bulk(viewer_client, "retry_failed", [job])
    bulk(viewer_client, "cancel_jobs", [job])
    assert status(job) == JobStatus.FAILED
    assert not Journal.objects.filter(job=job, event=JournalEvent.RETRIED).exists()


def test_staff_without_job_permission_is_refused(client, django_user_model) -> None:
    user = django_user_model.objects.create_user("nobody", password="pw", is_staff=True)
    client.force_login(user)
    job = failed_job()
    assert client.get(url("change", job)).status_code == 403
    assert client.get(reverse("admin:hotmesh_django_job_queues")).status_code == 403
    assert client.post(url("retry", job)).status_code == 403


def test_actions_are_post_only(admin_client) -> None:
    job = failed_job()
    for name in ("retry", "cancel", "rerun"):
        assert admin_client.get(url(name, job)).status_code == 405
    assert status(job) == JobStatus.FAILED


def test_actions_need_a_csrf_token(admin_user) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    job = failed_job()
    for name, data in (
        ("retry", {}),
        ("cancel", {}),
        ("rerun", {"step": "1"}),
        ("signal", {"name": "go"}),
    ):
        assert client.post(url(name, job), data).status_code == 403
    response = client.post(
        reverse(CHANGELIST), {"action": "retry_failed", "_selected_action": [job.pk]}
    )
    assert response.status_code == 403
    assert status(job) == JobStatus.FAILED
    page = client.get(url("change", job)).content.decode()
    assert page.count('name="csrfmiddlewaretoken"') >= 3  # one per operation form


# -- queues -------------------------------------------------------------------------------


def test_pause_and_resume_a_queue(admin_client) -> None:
    from hotmesh_django.models import Queue

    JobFactory(queue="emails")
    pause = reverse("admin:hotmesh_django_job_pause_queue")
    resume = reverse("admin:hotmesh_django_job_resume_queue")
    response = admin_client.post(pause, {"queue": "emails"}, follow=True)
    assert "Queue emails paused." in messages_text(response)
    assert Queue.objects.get(name="emails").paused
    page = response.content.decode()
    assert 'hm-badge hm-waiting">paused' in page and ">Resume<" in page
    response = admin_client.post(pause, {"queue": "emails"}, follow=True)
    assert "Queue emails was already paused." in messages_text(response)
    response = admin_client.post(resume, {"queue": "emails"}, follow=True)
    assert "Queue emails resumed." in messages_text(response)
    assert not Queue.objects.get(name="emails").paused
    response = admin_client.post(pause, {"queue": "emials"}, follow=True)
    assert "Unknown queue 'emials'" in messages_text(response)
    assert admin_client.get(pause).status_code == 405
    # Hand-made posts: no name, an empty one, one longer than a queue name can be.
    for data in ({}, {"queue": ""}, {"queue": "q" * 101}):
        response = admin_client.post(pause, data, follow=True)
        assert response.status_code == 200
        assert "queue" in messages_text(response).lower()
    assert Queue.objects.filter(paused=True).count() == 0


def test_viewer_cannot_pause_queues(viewer_client) -> None:
    JobFactory(queue="emails")
    page = viewer_client.get(reverse("admin:hotmesh_django_job_queues")).content.decode()
    assert ">Pause<" not in page
    response = viewer_client.post(
        reverse("admin:hotmesh_django_job_pause_queue"), {"queue": "emails"}
    )
    assert response.status_code == 403
