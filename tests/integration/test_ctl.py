"""`manage.py hotmesh_ctl`: who paused a queue is on record, as from the admin."""

from __future__ import annotations

import logging
from io import StringIO

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from hotmesh_django.models import Queue

pytestmark = pytest.mark.django_db


def test_a_named_user_goes_into_the_admin_history(caplog: pytest.LogCaptureFixture) -> None:
    User.objects.create_user("ops", is_staff=True)
    out = StringIO()
    with caplog.at_level(logging.INFO, logger="hotmesh_django.engine.queues"):
        call_command("hotmesh_ctl", "pause", "default", "--user", "ops", stdout=out)
    assert "paused on every worker" in out.getvalue()
    assert Queue.objects.get(name="default").paused
    entry = LogEntry.objects.get()
    assert (entry.user.username, entry.action_flag, entry.change_message) == (
        "ops",
        CHANGE,
        "Paused.",
    )
    assert entry.object_repr and entry.get_edited_object() == Queue.objects.get(name="default")
    assert "queue paused queue=default changed=True by=ops" in caplog.text

    call_command("hotmesh_ctl", "resume", "default", "--user", "ops", stdout=out)
    assert LogEntry.objects.latest("id").change_message == "Resumed."


def test_without_a_user_the_log_names_the_os_account(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="hotmesh_django.engine.queues"):
        call_command("hotmesh_ctl", "pause", "default", stdout=StringIO())
    assert "by=os:" in caplog.text
    assert not LogEntry.objects.exists()


def test_an_unknown_user_is_refused_and_nothing_changes() -> None:
    with pytest.raises(CommandError, match="No user is named 'nobody'"):
        call_command("hotmesh_ctl", "pause", "default", "--user", "nobody")
    assert not Queue.objects.filter(name="default", paused=True).exists()


def test_nothing_is_recorded_when_nothing_changed() -> None:
    User.objects.create_user("ops", is_staff=True)
    call_command("hotmesh_ctl", "resume", "default", "--user", "ops", stdout=StringIO())
    assert not LogEntry.objects.exists()


@pytest.mark.parametrize("name", ["", "q" * 101])
def test_a_name_that_cannot_be_a_queue_is_refused_even_with_force(name: str) -> None:
    with pytest.raises(CommandError, match="queue must be a non-empty string of at most 100"):
        call_command("hotmesh_ctl", "pause", "--force", name)
    assert not Queue.objects.exists()
