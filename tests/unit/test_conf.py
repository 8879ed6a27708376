"""conf.settings caches what it read and forgets it when a HOTMESH_* setting changes."""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings
from django.test import override_settings

from hotmesh_django.conf import DEFAULTS, settings


def test_a_setting_is_read_once_then_served_from_the_cache() -> None:
    settings.clear()
    assert settings.lease_seconds == django_settings.HOTMESH_LEASE_SECONDS
    assert "HOTMESH_LEASE_SECONDS" in settings._cache


def test_a_setting_left_out_gets_its_default() -> None:
    assert not hasattr(django_settings, "HOTMESH_MAX_PAYLOAD_BYTES")
    settings.clear()
    assert settings.max_payload_bytes == DEFAULTS["HOTMESH_MAX_PAYLOAD_BYTES"]


def test_override_settings_is_seen_at_once_and_undone_after() -> None:
    before = settings.lease_seconds
    with override_settings(HOTMESH_LEASE_SECONDS=7):
        assert settings.lease_seconds == 7.0
        with override_settings(HOTMESH_LEASE_SECONDS=3):
            assert settings.lease_seconds == 3.0
        assert settings.lease_seconds == 7.0
    assert settings.lease_seconds == before


def test_the_pytest_django_fixture_is_seen(settings_fixture: object) -> None:
    assert settings.max_payload_bytes == 123


@pytest.fixture
def settings_fixture(settings: object) -> object:
    settings.HOTMESH_MAX_PAYLOAD_BYTES = 123  # type: ignore[attr-defined]
    return settings


def test_other_settings_leave_the_cache_alone() -> None:
    settings.clear()
    _ = settings.poll_interval_seconds
    with override_settings(TIME_ZONE="Europe/Paris"):
        assert "HOTMESH_POLL_INTERVAL_SECONDS" in settings._cache
