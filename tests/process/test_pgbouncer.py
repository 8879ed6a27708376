"""Workers behind PgBouncer in transaction mode, with `--poll-only`.

In transaction mode consecutive transactions of one client may run on different
server sessions, so nothing may rely on session state: no LISTEN, no session
advisory locks, no server-side prepared statements. A small server pool makes the
interleaving certain. Needs the `pgbouncer` binary and a TCP database server (the
system PostgreSQL stage of CI); skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from hotmesh_django.models import Job, Journal, Stream
from tests import workflows as w
from tests.conftest import WorkerProcess

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]

PGBOUNCER = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def bouncer(transactional_db: None) -> Iterator[str]:
    """Start PgBouncer (transaction mode, 3 server connections) in front of the test
    database; yield its DATABASE_URL."""
    if PGBOUNCER is None:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    params = connection.settings_dict
    host = params["HOST"] or ""
    if not host or host.startswith("/"):
        pytest.skip("the test server has no TCP address for PgBouncer to reach")
    port = _free_port()
    user = params["USER"] or "postgres"
    # PgBouncer refuses to run as root; its files must be readable by whoever runs it.
    folder = Path(tempfile.mkdtemp(prefix="hm-bouncer-"))
    folder.chmod(0o755)
    ini = folder / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"* = host={host} port={params['PORT'] or 5432} user={user}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        "auth_type = any\npool_mode = transaction\n"
        "default_pool_size = 3\nmax_client_conn = 200\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
    )
    ini.chmod(0o644)
    command = [PGBOUNCER, str(ini)]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    log = folder / "pgbouncer.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"postgres://{user}@127.0.0.1:{port}/{params['NAME']}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                psycopg.connect(
                    url.replace("postgres://", "postgresql://"), connect_timeout=1
                ).close()
                break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"pgbouncer did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield url
        # The workers' sessions really went through it.
        assert log.read_text().count("login attempt") > 2
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def test_poll_only_workers_run_workflows_through_pgbouncer_transaction_mode(
    bouncer: str, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    steps = [w.three_steps.start(i) for i in range(40)]
    sleeps = [w.sleeper.start(0.3) for _ in range(5)]
    waits = [w.waiter.start("go") for _ in range(5)]
    parents = [w.parent.start(i) for i in range(5)]
    # The worker's only database is PgBouncer (HOTMESH_DATABASE_NAME keeps the name).
    env = {"DATABASE_URL": bouncer, "PGAPPNAME": "hm-bouncer-worker"}
    procs = [spawn_worker("--poll-only", "--concurrency", "4", env_extra=env) for _ in range(2)]
    for handle in waits:
        handle.signal("go", "ok")

    assert [h.result(timeout=60) for h in steps] == [i + 3 for i in range(40)]
    assert all(float(h.result(timeout=30)) >= 0.3 for h in sleeps)
    assert [h.result(timeout=30) for h in waits] == ["ok"] * 5
    assert [h.result(timeout=30) for h in parents] == [[i + 100, 100, 101, 102] for i in range(5)]
    per_step = Tally(Journal.objects.filter(event="step_completed").values_list("job_id", "step"))
    assert set(per_step.values()) == {1}
    assert not Job.objects.exclude(status="SUCCESSFUL").exists()
    assert not Stream.objects.exists()
    for proc in procs:
        log = proc.log()
        assert proc.poll() is None, log
        assert "wake=poll" in log
        assert "Traceback" not in log and "prepared statement" not in log, log[-3000:]
