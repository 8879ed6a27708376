from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse

from hotmesh_django.models import Job, Schedule

pytestmark = pytest.mark.django_db(transaction=True)


def test_schedule_form_validates_cron_and_timezone(admin_client: Any) -> None:
    import tests.integration.schedule_defs  # noqa: F401 - registers sched.ping

    url = reverse("admin:hotmesh_django_schedule_add")
    data = {
        "name": "nightly",
        "workflow": "sched.ping",
        "cron": "not cron",
        "timezone": "Mars/Olympus",
        "args": "[]",
        "kwargs": "{}",
        "enabled": "on",
    }
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert not Schedule.objects.exists()
    assert b"errorlist" in response.content
    data.update(cron="0 9 * * *", timezone="Europe/Paris")
    response = admin_client.post(url, data)
    assert response.status_code == 302
    assert Schedule.objects.get().next_run_at is not None


@pytest.mark.parametrize(
    ("changes", "field", "error"),
    [
        ({"workflow": "sched.nope"}, "workflow", "No workflow named 'sched.nope' is registered"),
        ({"args": "[1, 2]"}, "args", "sched.ping.start() arguments do not fit ping(tag='')"),
        ({"kwargs": '{"colour": 1}'}, "args", "unexpected keyword argument"),
        ({"args": '{"a": 1}'}, "args", "Arguments must be a JSON list"),
    ],
)
def test_schedule_form_refuses_what_no_worker_could_start(
    admin_client: Any, changes: dict[str, str], field: str, error: str
) -> None:
    """A schedule whose workflow is unknown, or whose arguments do not fit it, would be
    skipped by every worker with only a log line to say why."""
    import tests.integration.schedule_defs  # noqa: F401 - registers sched.ping

    data = {
        "name": "n",
        "workflow": "sched.ping",
        "cron": "0 9 * * *",
        "timezone": "UTC",
        "args": '["x"]',
        "kwargs": "{}",
        "enabled": "on",
        **changes,
    }
    response = admin_client.post(reverse("admin:hotmesh_django_schedule_add"), data)
    assert response.status_code == 200
    assert error in " ".join(response.context["adminform"].form.errors[field])
    assert not Schedule.objects.exists()


def test_schedule_model_clean_checks_what_a_worker_needs() -> None:
    from django.core.exceptions import ValidationError

    bad = Schedule(name="x", workflow="w", cron="61 * * * *", timezone="Mars/Base", args={})
    with pytest.raises(ValidationError) as caught:
        bad.full_clean()
    assert set(caught.value.message_dict) == {"cron", "timezone", "args"}
    Schedule(name="y", workflow="w", cron="@daily", timezone="UTC").full_clean()


def test_enabling_in_the_form_counts_from_now(admin_client: Any) -> None:
    """As the enable action does: the slots missed while it was off do not fire."""
    import datetime

    from django.utils import timezone

    import tests.integration.schedule_defs  # noqa: F401 - registers sched.ping

    missed = timezone.now() - datetime.timedelta(hours=3)
    schedule = Schedule.objects.create(
        name="n", workflow="sched.ping", cron="0 * * * *", enabled=False, next_run_at=missed
    )
    data = {
        "name": "n",
        "workflow": "sched.ping",
        "cron": "0 * * * *",
        "timezone": "UTC",
        "args": "[]",
        "kwargs": "{}",
        "enabled": "on",
    }
    url = reverse("admin:hotmesh_django_schedule_change", args=[schedule.pk])
    assert admin_client.post(url, data).status_code == 302
    schedule.refresh_from_db()
    assert schedule.enabled and schedule.next_run_at > timezone.now()


def test_schedule_actions_report_what_moved(admin_client: Any) -> None:
    import tests.integration.schedule_defs  # noqa: F401 - registers sched.ping

    Schedule.objects.create(name="a", workflow="sched.ping", cron="* * * * *", enabled=True)
    Schedule.objects.create(name="b", workflow="sched.ping", cron="* * * * *", enabled=False)
    url = reverse("admin:hotmesh_django_schedule_changelist")
    ids = [str(pk) for pk in Schedule.objects.values_list("pk", flat=True)]
    response = admin_client.post(url, {"action": "enable", "_selected_action": ids}, follow=True)
    assert "1 schedule(s) enabled; 1 skipped (already on)." in response.content.decode()
    response = admin_client.post(
        url, {"action": "trigger_now", "_selected_action": ids}, follow=True
    )
    assert "2 workflow(s) started" in response.content.decode()
    assert Job.objects.filter(workflow_id__startswith="schedule:").count() == 2


def _admin_log(model: type[Any]) -> list[tuple[str, str, str]]:
    """(user, object, message) of the admin log entries about `model`, oldest first."""
    entries = LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(model)
    ).order_by("id")
    return [(e.user.get_username(), e.object_repr, e.change_message) for e in entries]


def test_schedule_actions_are_audited_with_the_acting_user(admin_client: Any) -> None:
    import tests.integration.schedule_defs  # noqa: F401 - registers sched.ping

    Schedule.objects.create(name="on", workflow="sched.ping", cron="* * * * *", enabled=True)
    Schedule.objects.create(name="off", workflow="sched.ping", cron="* * * * *", enabled=False)
    url = reverse("admin:hotmesh_django_schedule_changelist")
    ids = [str(pk) for pk in Schedule.objects.order_by("name").values_list("pk", flat=True)]
    admin_client.post(url, {"action": "enable", "_selected_action": ids})
    admin_client.post(url, {"action": "disable", "_selected_action": ids})
    admin_client.post(url, {"action": "trigger_now", "_selected_action": ids[:1]})
    log = _admin_log(Schedule)
    started = Job.objects.get(workflow_id__startswith="schedule:").workflow_id
    # Only what moved is recorded: "on" was already enabled.
    assert log[0] == ("admin", "off", "Enabled.")
    assert sorted(log[1:3]) == [("admin", "off", "Disabled."), ("admin", "on", "Disabled.")]
    assert log[3] == ("admin", "off", f"Triggered now: started {started}.")


def test_queue_pause_and_resume_are_audited_with_the_acting_user(admin_client: Any) -> None:
    from hotmesh_django.models import Queue
    from tests.admin.factories import JobFactory

    JobFactory(queue="emails")
    pause = reverse("admin:hotmesh_django_job_pause_queue")
    resume = reverse("admin:hotmesh_django_job_resume_queue")
    admin_client.post(pause, {"queue": "emails"})
    admin_client.post(pause, {"queue": "emails"})  # already paused: nothing to record
    admin_client.post(resume, {"queue": "emails"})
    assert _admin_log(Queue) == [("admin", "emails", "Paused."), ("admin", "emails", "Resumed.")]
