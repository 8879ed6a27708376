"""The demo command, end to end: real worker subprocesses, real workflows."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from tests.conftest import ROOT


@pytest.mark.process
@pytest.mark.django_db(transaction=True)
def test_demo_runs_every_job_to_success(worker_env: dict[str, str]) -> None:
    env = {**worker_env, "DJANGO_SETTINGS_MODULE": "demo_project.settings", "COLUMNS": "120"}
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "manage.py"),
            "demo",
            "--no-serve",
            "--orders",
            "3",
            "--jobs",
            "5",
            "--workers",
            "1",
            "--timeout",
            "90",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
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
