"""The demo command, end to end: real worker subprocesses, real workflows."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from tests.conftest import ROOT


def _demo(worker_env: dict[str, str], *flags: str) -> str:
    """Run `manage.py demo --no-serve` with one worker; return its output (exit 0)."""
    env = {**worker_env, "DJANGO_SETTINGS_MODULE": "demo_project.settings", "COLUMNS": "200"}
    command = [sys.executable, str(ROOT / "manage.py"), "demo", "--no-serve", "--workers", "1"]
    proc = subprocess.run(
        [*command, "--timeout", "90", *flags],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    return output


@pytest.mark.process
@pytest.mark.django_db(transaction=True)
def test_demo_runs_every_job_to_success(worker_env: dict[str, str]) -> None:
    output = _demo(worker_env, "--orders", "3", "--jobs", "5")
    assert "Demo summary" in output
    assert "All 8 jobs SUCCESSFUL" in output
    assert "Admin login: user admin password admin" in output
    assert "approval signals sent" in output


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--orders", "-1"], "argument --orders: must be at least 0, not -1"),
        (["--jobs", "many"], "argument --jobs: 'many' is not an integer"),
        (["--workers", "0"], "argument --workers: must be at least 1, not 0"),
        (["--concurrency", "0"], "argument --concurrency: must be at least 1, not 0"),
        (["--port", "70000"], "argument --port: a port is at most 65535, not 70000"),
        (["--timeout", "0"], "argument --timeout: must be more than zero seconds, not 0"),
    ],
)
def test_demo_rejects_bad_flags(flags: list[str], message: str) -> None:
    # The shop app is not installed under the test settings: load the command itself.
    from demo_project.shop.management.commands.demo import Command

    with pytest.raises(CommandError, match=re.escape(message)):
        call_command(Command(), "--no-serve", *flags)


@pytest.mark.process
@pytest.mark.django_db(transaction=True)
def test_demo_leaves_an_existing_admin_user_alone(worker_env: dict[str, str]) -> None:
    """DATABASE_URL may name a database that is not the demo's own."""
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user("admin", password="not-the-demo's")
    output = _demo(worker_env, "--orders", "1", "--jobs", "1")
    assert "user admin already exists in this database; its password was left" in output
    user = get_user_model().objects.get(username="admin")
    assert user.check_password("not-the-demo's") and not user.is_superuser


def test_demo_refuses_a_busy_port_before_it_runs() -> None:
    import socket

    from demo_project.shop.management.commands.demo import Command

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(CommandError, match=f"Port {port} on 127.0.0.1 is in use"):
            call_command(Command(), "--port", str(port))
