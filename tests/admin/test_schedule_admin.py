from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from hotmesh_django.models import Job, Schedule

pytestmark = pytest.mark.django_db(transaction=True)


def test_schedule_form_validates_cron_and_timezone(admin_client: Any) -> None:
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
