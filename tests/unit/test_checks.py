from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from django.test import override_settings

from hotmesh_django.checks import check_database, check_settings
from tests.conftest import ROOT


def _ids(messages: list[Any]) -> list[str]:
    return [m.id for m in messages]


def _manage_check(**env: str) -> subprocess.CompletedProcess[str]:
    """`manage.py check` in a fresh process with `env` on top of ours."""
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_default_settings_pass() -> None:
    assert check_settings() == []
    assert check_database() == []


@pytest.mark.parametrize(
    ("setting", "value", "check_id"),
    [
        ("HOTMESH_LEASE_SECONDS", 0, "hotmesh.E002"),
        ("HOTMESH_LEASE_SECONDS", "30", "hotmesh.E002"),
        ("HOTMESH_LEASE_SECONDS", float("inf"), "hotmesh.E002"),
        ("HOTMESH_POLL_INTERVAL_SECONDS", float("nan"), "hotmesh.E004"),
        # Finite, but past what timestamps and timers hold, or a busy loop.
        ("HOTMESH_LEASE_SECONDS", 1e15, "hotmesh.E002"),
        ("HOTMESH_POLL_INTERVAL_SECONDS", 1e300, "hotmesh.E004"),
        ("HOTMESH_HEARTBEAT_SECONDS", 1e-6, "hotmesh.E003"),
        ("HOTMESH_IMPORTS", ["tests.broken_module"], "hotmesh.E005"),
        ("HOTMESH_IMPORTS", None, "hotmesh.E005"),
        ("HOTMESH_IMPORTS", [".relative"], "hotmesh.E005"),
        ("HOTMESH_IMPORTS", [""], "hotmesh.E005"),
        ("HOTMESH_QUEUES", {"": {"concurrency": 1}}, "hotmesh.E008"),
        ("HOTMESH_HEARTBEAT_SECONDS", -1, "hotmesh.E003"),
        ("HOTMESH_POLL_INTERVAL_SECONDS", None, "hotmesh.E004"),
        ("HOTMESH_IMPORTS", "tests.activities", "hotmesh.E005"),
        ("HOTMESH_IMPORTS", ["no.such.module"], "hotmesh.E005"),
        ("HOTMESH_MAX_PAYLOAD_BYTES", 0, "hotmesh.E007"),
        ("HOTMESH_QUEUES", {"emails": 2}, "hotmesh.E008"),
        ("HOTMESH_LISTEN", "no", "hotmesh.E011"),
    ],
)
def test_bad_settings_are_reported_with_ids_and_hints(
    setting: str, value: Any, check_id: str
) -> None:
    with override_settings(**{setting: value}):
        errors = check_settings()
    assert check_id in _ids(errors)
    assert all(e.hint for e in errors)


@override_settings(HOTMESH_LEASE_SECONDS=5, HOTMESH_HEARTBEAT_SECONDS=10)
def test_heartbeat_must_be_shorter_than_the_lease() -> None:
    assert _ids(check_settings()) == ["hotmesh.E006"]


def test_non_postgres_database_fails_the_system_check(tmp_path: Any) -> None:
    result = _manage_check(
        DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3",
        DJANGO_SETTINGS_MODULE="demo_project.settings",
    )
    assert result.returncode != 0
    assert "hotmesh.E001" in result.stderr and "needs PostgreSQL" in result.stderr
    assert "HINT: Set DATABASES" in result.stderr


@pytest.mark.parametrize("value", ["'tests.activities'", "None", "['.relative']", "[1]"])
def test_bad_imports_setting_fails_the_check_not_app_loading(tmp_path: Any, value: str) -> None:
    """A bare string (read as a list it is one module per character), None or a
    relative name must reach hotmesh.E005, not crash every process at start-up."""
    (tmp_path / "bad_imports_settings.py").write_text(
        f"from demo_project.settings import *  # noqa: F403\nHOTMESH_IMPORTS = {value}\n"
    )
    result = _manage_check(
        DJANGO_SETTINGS_MODULE="bad_imports_settings",
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]),
    )
    assert result.returncode != 0
    assert "hotmesh.E005" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value", [0, -5, "7d", True])
def test_bad_prune_setting_is_reported(value: Any) -> None:
    with override_settings(HOTMESH_PRUNE_AFTER_SECONDS=value):
        assert "hotmesh.E009" in _ids(check_settings())


@pytest.mark.parametrize(
    ("overrides", "check_id"),
    [
        ({"HOTMESH_LEASE_SECONDS": 5, "HOTMESH_HEARTBEAT_SECONDS": 10}, "hotmesh.E006"),
        ({"HOTMESH_PRUNE_AFTER_SECONDS": "7d"}, "hotmesh.E009"),
        ({"HOTMESH_QUEUES": {"emails": {"rate": "fast"}}}, "hotmesh.E008"),
        ({"HOTMESH_CODEC": "no.such.Codec"}, "hotmesh.E020"),
        ({"HOTMESH_CODEC": "hotmesh_django.codecs.FernetCodec"}, "hotmesh.E022"),
        ({"HOTMESH_REDACT_KEYS": ["("]}, "hotmesh.E025"),
        ({"HOTMESH_MIDDLEWARE": "not.a.list"}, "hotmesh.E030"),
        ({"HOTMESH_MIDDLEWARE": ["no.such.Middleware"]}, "hotmesh.E031"),
    ],
)
@pytest.mark.django_db  # Django 6's own checks read the database
def test_every_hotmesh_check_gives_a_hint(overrides: dict[str, Any], check_id: str) -> None:
    """Every error names its id and says how to fix it, whichever check reports it."""
    from django.core.checks import run_checks

    with override_settings(HOTMESH_CODEC_KEYS=None, **overrides):
        errors = [e for e in run_checks() if e.id and e.id.startswith("hotmesh.")]
    assert check_id in _ids(errors)
    assert all(e.hint and e.hint.strip() for e in errors), [(e.id, e.hint) for e in errors]
