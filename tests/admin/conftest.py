"""Fixtures for the admin tests: a burst worker, operators with and without rights."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connections
from django.db.models import Q
from django.db.models.functions import Now
from django.test import Client

import tests.admin.defs  # noqa: F401 - registers the admin tests' definitions
from hotmesh_django.models import Stream, StreamStatus
from hotmesh_django.worker import Worker


def _work_left() -> bool:
    return Stream.objects.filter(
        Q(status=StreamStatus.READY)
        | Q(status=StreamStatus.SCHEDULED, visible_at__lte=Now() + timedelta(seconds=1))
    ).exists()


@pytest.fixture
def drain() -> Iterator[Callable[[], int]]:
    """Return a function that runs burst workers until the queues are empty.

    A burst worker can exit while a message its last runner queued is still READY
    (it decides "drained" from a claim that ran just before that message existed),
    so run another one then: these tests are about the admin, not burst mode.
    """

    def run() -> int:
        processed = 0
        for _ in range(5):
            worker = Worker(burst=True, concurrency=2, graceful_timeout=5)
            worker.run()
            processed += worker.processed
            if not _work_left():
                break
        return processed

    yield run
    connections.close_all()


@pytest.fixture
def viewer(db: None) -> User:
    """A staff user who may view jobs but not operate them."""
    user = User.objects.create_user("viewer", password="pw", is_staff=True)  # noqa: S106
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="hotmesh_django",
            codename__startswith="view_",
        )
    )
    return user


@pytest.fixture
def viewer_client(viewer: User) -> Client:
    client = Client()
    client.force_login(viewer)
    return client


@pytest.fixture
def operator_client(db: None) -> Client:
    """A staff user with view_job and change_job only (not a superuser)."""
    user = User.objects.create_user("operator", password="pw", is_staff=True)  # noqa: S106
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="hotmesh_django",
            codename__in=["view_job", "change_job"],
        )
    )
    client = Client()
    client.force_login(user)
    return client
