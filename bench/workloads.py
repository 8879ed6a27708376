"""Our workloads, run against a fresh database with real worker subprocesses.

Every workload truncates the hotmesh tables first, so runs do not inherit each
other's rows, and reads its timings from the tables (or, for pickup latency, from
a file the activity body appends to), so worker start-up is never counted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from django.core.management import call_command
from django.db import connection, connections
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = "hotmesh_django"
WORKLOADS = ("w1", "w2", "w3", "timers", "claim", "rss")
# Tables emptied between runs, children first.
TABLES = (
    "hotmesh_django_journal",
    "hotmesh_django_signal",
    "hotmesh_django_stream",
    "hotmesh_django_activity",
    "hotmesh_django_job",
    "hotmesh_django_worker",
    "hotmesh_django_schedule",
)

Log = Callable[[str], None]
Record = dict[str, Any]


class BenchError(RuntimeError):
    """A workload could not finish (worker died, jobs failed, timeout)."""


@dataclasses.dataclass(kw_only=True)
class BenchConfig:
    """What to run, how often and how big."""

    workloads: Sequence[str] = WORKLOADS
    n_w1: int = 10_000
    n_w2: int = 1_000
    n_w3: int = 50
    n_timers: int = 50
    runs: int = 3
    processes: int = 2
    concurrency: int = 8
    database: str = "hotmesh_bench"
    claim_backlogs: Sequence[int] = (1_000, 1_000_000)
    claim_calls: int = 200
    out_dir: Path = ROOT / "bench" / "results"
    json_path: Path | None = None

    @property
    def setting(self) -> str:
        return f"{self.processes} procs x concurrency {self.concurrency}"


# -- statistics -------------------------------------------------------------------------


def pct(values: Sequence[float], p: float) -> float:
    """Return the p-th percentile of `values`, interpolated linearly."""
    xs = sorted(values)
    if not xs:
        raise ValueError("no values")
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def latency_fields(seconds: Sequence[float], prefix: str = "") -> Record:
    """Return p50/p95/max in milliseconds (and n) for latencies in seconds."""
    return {
        f"{prefix}p50_ms": round(pct(seconds, 50) * 1000, 2),
        f"{prefix}p95_ms": round(pct(seconds, 95) * 1000, 2),
        f"{prefix}max_ms": round(max(seconds) * 1000, 2),
        f"{prefix}samples": len(seconds),
    }


# -- the database -----------------------------------------------------------------------


def libpq_params(dbname: str | None = None) -> dict[str, Any]:
    """Return psycopg connection keywords for the default alias (or `dbname` on it)."""
    params = dict(connections["default"].get_connection_params())
    for key in ("cursor_factory", "context", "prepare_threshold", "server_side_binding"):
        params.pop(key, None)
    if dbname is not None:
        params["dbname"] = dbname
    return {k: v for k, v in params.items() if v not in (None, "")}


def ensure_database(name: str) -> None:
    """Create database `name` on the default alias's server unless it exists."""
    with psycopg.connect(**libpq_params("postgres"), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            return
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(name: str) -> None:
    with psycopg.connect(**libpq_params("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def database_url(name: str) -> str:
    """Return a DATABASE_URL for database `name` on the default alias's server."""
    conf = connections["default"].settings_dict
    user = quote(str(conf.get("USER") or ""), safe="")
    password = quote(str(conf.get("PASSWORD") or ""), safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = str(conf.get("HOST") or "")
    port = str(conf.get("PORT") or "")
    if host.startswith("/"):  # a Unix socket directory goes in the query string
        query = f"?host={quote(host, safe='/')}" + (f"&port={port}" if port else "")
        return f"postgres://{auth}/{quote(name)}{query}"
    return f"postgres://{auth}{host}{':' + port if port else ''}/{quote(name)}"


def claim_database(name: str) -> str:
    """The database the claim-cost workload fills, beside benchmark database `name`."""
    return f"{name}_claim"


def use_database(name: str) -> None:
    """Point the default alias (every thread's connection) at database `name`.

    Django's connection wrappers share the settings dict of their alias, so closing
    them and changing NAME moves every later connection of this process.
    """
    connections.close_all()
    connections["default"].settings_dict["NAME"] = name


def prepare_database(name: str, log: Log) -> None:
    """Create, select and migrate the benchmark database."""
    ensure_database(name)
    use_database(name)
    log(f"database {name}: migrating")
    call_command("migrate", verbosity=0, interactive=False)


def execute(statement: str, params: Sequence[Any] | dict[str, Any] | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def fetchone(statement: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchone()


def fetchall(statement: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall()


def reset_tables() -> None:
    """Empty the hotmesh tables and flush dirty buffers before a run."""
    execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    checkpoint()


def checkpoint() -> None:
    """Flush dirty buffers so a run does not pay for the previous run's writes."""
    with contextlib.suppress(Exception):
        execute("CHECKPOINT")


def server_version() -> str:
    return str(fetchone("SHOW server_version")[0])


def _cpu_jiffies() -> tuple[int, int]:
    """Return (busy, total) jiffies of all CPUs since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def noise(seconds: float = 1.0) -> Record:
    """Describe what else loads the machine just before a run (ours is stopped then):
    the CPU share busy over `seconds`, the load average, other databases' busy sessions.
    """
    busy: float | None = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        b0, t0 = _cpu_jiffies()
        time.sleep(seconds)
        b1, t1 = _cpu_jiffies()
        busy = round(100.0 * (b1 - b0) / max(1, t1 - t0), 1)
    sessions = fetchone(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
        " AND datname IS DISTINCT FROM current_database() AND pid <> pg_backend_pid()"
    )[0]
    return {
        "foreign_cpu_pct_before": busy,
        "load1_before": round(os.getloadavg()[0], 2),
        "other_db_active_sessions": sessions,
    }


def engine_digest() -> str:
    """Return a short hash of the engine's source, to tie figures to a code version."""
    digest = hashlib.sha256()
    package = ROOT / "hotmesh_django"
    for path in sorted(package.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


# -- worker subprocesses ----------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """Return the pids whose parent is `pid` (scanning /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) follows the parenthesised command name, which may hold spaces.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def rss_mb(pid: int) -> float | None:
    """Return the VmRSS of process `pid` in MB (None if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class WorkerPool:
    """`manage.py hotmesh_worker` as a subprocess on the benchmark database."""

    def __init__(
        self,
        *,
        processes: int,
        concurrency: int,
        database: str,
        log_dir: Path,
        name: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.processes = processes
        self.concurrency = concurrency
        self.database = database
        self.log_path = log_dir / f"{name}.log"
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerPool:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            HOTMESH_DATABASE_NAME=self.database,
            DEBUG="false",  # as in production: no per-query logging
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
            PYTHONUNBUFFERED="1",
        )
        if "DATABASE_URL" not in env:
            # Name the server directly, so workers skip the embedded server's start-up.
            env["DATABASE_URL"] = database_url(self.database)
        env.update(self.env)
        cmd = [
            sys.executable,
            str(ROOT / "manage.py"),
            "hotmesh_worker",
            "--processes",
            str(self.processes),
            "--concurrency",
            str(self.concurrency),
            "--import",
            "bench.defs",
        ]
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
            )
        return self

    def check(self) -> None:
        """Raise if the worker exited on its own."""
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(
                f"worker exited early (rc={self.proc.returncode}); see {self.log_path}"
            )

    def worker_pids(self) -> list[int]:
        """The processes that run work: the forked children, or the process itself."""
        assert self.proc is not None
        if self.processes == 1:
            return [self.proc.pid]
        return _children(self.proc.pid)

    def rss(self) -> list[float]:
        return [r for r in (rss_mb(pid) for pid in self.worker_pids()) if r is not None]

    def wait_registered(self, timeout: float = 60.0) -> None:
        """Wait until every worker process has written its Worker row."""
        wait_until(
            lambda: fetchone("SELECT count(*) FROM hotmesh_django_worker")[0] >= self.processes,
            timeout,
            pool=self,
            what="workers to register",
        )

    def stop(self, timeout: float = 45.0) -> None:
        """SIGTERM (graceful), then SIGKILL the process group we started."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    *,
    pool: WorkerPool | None = None,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if pool is not None:
            pool.check()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def wait_jobs_done(n: int, *, pool: WorkerPool, timeout: float) -> None:
    """Wait until `n` jobs are SUCCESSFUL; raise at once if any failed."""

    def done() -> bool:
        ok, bad = fetchone(
            "SELECT count(*) FILTER (WHERE status = 'SUCCESSFUL'),"
            " count(*) FILTER (WHERE status IN ('FAILED', 'CANCELLED'))"
            " FROM hotmesh_django_job"
        )
        if bad:
            sample = fetchone(
                "SELECT error FROM hotmesh_django_job"
                " WHERE status IN ('FAILED', 'CANCELLED') LIMIT 1"
            )
            raise BenchError(f"{bad} job(s) failed, e.g. {sample[0]}")
        return bool(ok >= n)

    wait_until(done, timeout, pool=pool, interval=0.1, what=f"{n} jobs to finish")


class MarkReader:
    """Read the "<key> <unix time>" lines that bench.defs.write_mark appends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        self.seen: dict[str, float] = {}
        self._offset = 0

    def poll(self) -> None:
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        cut = data.rfind(b"\n") + 1  # only complete lines
        self._offset += cut
        for line in data[:cut].decode().splitlines():
            key, _, stamp = line.partition(" ")
            self.seen[key] = float(stamp)

    def wait(self, key: str, timeout: float = 60.0, pool: WorkerPool | None = None) -> float:
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if key in self.seen:
                return self.seen[key]
            if time.monotonic() > deadline:
                raise BenchError(f"activity {key} did not start within {timeout:.0f} s")
            if pool is not None:
                pool.check()
            time.sleep(0.0005)


# -- the workloads ----------------------------------------------------------------------


class Runner:
    """Run the selected workloads; every per-run record goes to `records`."""

    def __init__(self, config: BenchConfig, log: Log) -> None:
        from bench import defs

        self.cfg = config
        self.log = log
        self.defs = defs
        self.records: list[Record] = []
        self.log_dir = config.out_dir / "logs"
        self.engine = engine_digest()
        self._noise: Record = {}

    def record(self, workload: str, run: int, **fields: Any) -> Record:
        rec: Record = {
            "ts": time.time(),
            "bench": "hotmesh",
            "system": SYSTEM,
            "workload": workload,
            "run": run,
            **fields,
            "engine": self.engine,
            **self._noise,
        }
        self.records.append(rec)
        if self.cfg.json_path is not None:
            self.cfg.json_path.parent.mkdir(parents=True, exist_ok=True)
            with self.cfg.json_path.open("a") as f:
                f.write(json.dumps(rec) + "\n")
        shown = {k: v for k, v in rec.items() if k not in ("ts", "bench", "system", "engine")}
        self.log(f"  {json.dumps(shown)}")
        return rec

    def pool(
        self, name: str, *, processes: int | None = None, env: dict[str, str] | None = None
    ) -> WorkerPool:
        return WorkerPool(
            processes=processes or self.cfg.processes,
            concurrency=self.cfg.concurrency,
            database=self.cfg.database,
            log_dir=self.log_dir,
            name=name,
            env=env,
        )

    def run(self) -> list[Record]:
        steps: dict[str, Callable[[int], None]] = {
            "w1": self.w1,
            "w2": self.w2,
            "w3": self.w3,
            "timers": self.timers,
            "claim": self.claim,
            "rss": self.rss,
        }
        for name in self.cfg.workloads:
            # Code that changed since the last workload may bring migrations.
            call_command("migrate", verbosity=0, interactive=False)
            self.engine = engine_digest()
            for run in range(self.cfg.runs):
                self.log(f"{name} run {run + 1}/{self.cfg.runs}")
                self._noise = noise()
                steps[name](run)
        return self.records

    # W1 ------------------------------------------------------------------------------

    def _enqueue(self, definition: Any, n: int) -> float:
        """Start `n` jobs, one call (one transaction) each; return the seconds taken."""
        t0 = time.perf_counter()
        for _ in range(n):
            definition.start()
        return time.perf_counter() - t0

    def w1(self, run: int) -> None:
        n = self.cfg.n_w1
        reset_tables()
        enqueue_s = self._enqueue(self.defs.noop, n)
        spawned = time.monotonic()
        with self.pool(f"w1-{run}") as pool:
            wait_jobs_done(n, pool=pool, timeout=120 + n / 20)
            wall = time.monotonic() - spawned
            rss = pool.rss()
        first, last = fetchone(
            "SELECT extract(epoch FROM min(started_at)), extract(epoch FROM max(finished_at))"
            " FROM hotmesh_django_activity"
        )
        drain = float(last - first)
        self.record(
            "W1",
            run,
            setting=self.cfg.setting,
            n=n,
            processes=self.cfg.processes,
            concurrency=self.cfg.concurrency,
            enqueue_jobs_per_s=round(n / enqueue_s, 1),
            drain_jobs_per_s=round(n / drain, 1),
            drain_s=round(drain, 3),
            wall_incl_startup_s=round(wall, 3),
            rss_after_mb=round(max(rss), 1) if rss else None,
        )

    # W2 ------------------------------------------------------------------------------

    def w2(self, run: int) -> None:
        n = self.cfg.n_w2
        reset_tables()
        with self.pool(f"w2-{run}") as pool:
            pool.wait_registered()
            submit_s = self._enqueue(self.defs.three_steps, n)
            wait_jobs_done(n, pool=pool, timeout=120 + n / 5)
            rss = pool.rss()
        rows = fetchall(
            "SELECT extract(epoch FROM created_at), extract(epoch FROM finished_at)"
            " FROM hotmesh_django_job WHERE kind = 'WORKFLOW'"
        )
        steps = fetchone(
            "SELECT count(*) FROM hotmesh_django_activity WHERE status = 'SUCCESSFUL'"
        )[0]
        if len(rows) != n or steps != 3 * n:
            raise BenchError(
                f"W2 expected {n} workflows and {3 * n} steps, found {len(rows)} and {steps}"
            )
        created = [float(r[0]) for r in rows]
        finished = [float(r[1]) for r in rows]
        wall = max(finished) - min(created)
        lats = [f - c for c, f in zip(created, finished, strict=True)]
        self.record(
            "W2",
            run,
            setting=self.cfg.setting,
            n=n,
            processes=self.cfg.processes,
            concurrency=self.cfg.concurrency,
            workflows_per_s=round(n / wall, 1),
            steps_per_s=round(3 * n / wall, 1),
            wall_s=round(wall, 3),
            submit_per_s=round(n / submit_s, 1),
            **latency_fields(lats),
            rss_after_mb=round(max(rss), 1) if rss else None,
        )

    # W3 ------------------------------------------------------------------------------

    def w3(self, run: int) -> None:
        n = self.cfg.n_w3
        reset_tables()
        marks = MarkReader(self.cfg.out_dir / f"marks-w3-{os.getpid()}.txt")
        env = {"BENCH_MARK_FILE": str(marks.path)}
        with self.pool(f"w3-{run}", processes=1, env=env) as pool:
            pool.wait_registered()
            self.defs.mark.start("warm")  # imports, first connection: not counted
            marks.wait("warm", timeout=60, pool=pool)
            lats = []
            for i in range(n):
                time.sleep(random.uniform(0.2, 0.6))  # random phase against any poll loop
                key = f"k{i}"
                t0 = time.time()
                self.defs.mark.start(key)
                lats.append(marks.wait(key, pool=pool) - t0)
        marks.path.unlink(missing_ok=True)
        self.record(
            "W3",
            run,
            setting=f"1 proc x concurrency {self.cfg.concurrency}",
            **latency_fields(lats),
        )

    # timers --------------------------------------------------------------------------

    def timers(self, run: int) -> None:
        n = self.cfg.n_timers
        reset_tables()
        marks = MarkReader(self.cfg.out_dir / f"marks-timers-{os.getpid()}.txt")
        env = {"BENCH_MARK_FILE": str(marks.path)}
        with self.pool(f"timers-{run}", processes=1, env=env) as pool:
            pool.wait_registered()
            for i in range(n):
                key = f"t{run}-{i}"
                self.defs.sleeper.using(workflow_id=key).start(key, random.uniform(0.1, 2.0))
                time.sleep(random.uniform(0.1, 0.3))
            wait_jobs_done(n, pool=pool, timeout=60 + n)
        marks.poll()
        marks.path.unlink(missing_ok=True)
        rows = fetchall(
            "SELECT j.workflow_id, extract(epoch FROM a.wake_at),"
            "       extract(epoch FROM a.finished_at)"
            "  FROM hotmesh_django_activity a JOIN hotmesh_django_job j ON j.id = a.job_id"
            " WHERE a.kind = 'SLEEP'"
        )
        next_step = [marks.seen[wid] - float(wake) for wid, wake, _ in rows]
        fired = [float(done) - float(wake) for _, wake, done in rows]
        self.record(
            "TIMERS",
            run,
            setting="1 proc, sleeps 0.1-2 s, idle worker",
            **latency_fields(next_step),
            **latency_fields(fired, prefix="fire_"),
        )

    # claim cost ----------------------------------------------------------------------

    def claim(self, run: int) -> None:
        # In a database of its own: the million-row backlog leaves planner statistics
        # behind (one job, one queue, every row READY) that TRUNCATE does not clear,
        # and in the same database the next invocation's workloads ran on plans made
        # for them (W3 pickups 2.97 -> 3.34 ms p50 after a claim test, measured).
        prepare_database(claim_database(self.cfg.database), self.log)
        try:
            for backlog in self.cfg.claim_backlogs:
                self._claim_one(run, backlog)
        finally:
            use_database(self.cfg.database)

    def _claim_one(self, run: int, backlog: int) -> None:
        from hotmesh_django.engine.claim import claim
        from hotmesh_django.models import Job

        reset_tables()
        queue = "bench_claim"
        job = Job.objects.create(
            workflow_id=f"bench-claim-{run}",
            name="bench.noop",
            kind="ACTIVITY",
            queue=queue,
            status="RUNNING",
        )
        t0 = time.perf_counter()
        execute(
            "INSERT INTO hotmesh_django_stream (queue, kind, job_id, step, name, payload,"
            " priority, status, visible_at, attempts, created_at)"
            " SELECT %s, 'TASK', %s, NULL, 'bench.noop', '{\"args\": [], \"kwargs\": {}}',"
            " 0, 'READY', now(), 0, now() FROM generate_series(1, %s)",
            [queue, job.pk, backlog],
        )
        execute("VACUUM ANALYZE hotmesh_django_stream")
        checkpoint()
        fill_s = time.perf_counter() - t0
        worker = uuid.uuid4()

        # Capture the engine's own claim statement, to EXPLAIN it below.
        captured: list[tuple[str, Any]] = []

        def capture(execute_: Any, sql_: str, params: Any, many: bool, context: Any) -> Any:
            captured.append((sql_, params))
            return execute_(sql_, params, many, context)

        with connection.execute_wrapper(capture):
            claim(queue=queue, worker_id=worker, limit=1, lease_seconds=60)
        claim_sql, claim_params = captured[-1]

        one: list[float] = []
        for _ in range(self.cfg.claim_calls):
            t = time.perf_counter()
            got = claim(queue=queue, worker_id=worker, limit=1, lease_seconds=60)
            one.append(time.perf_counter() - t)
            if not got:
                raise BenchError("claim returned nothing: backlog too small")
        batch: list[float] = []
        for _ in range(3):
            t = time.perf_counter()
            claim(queue=queue, worker_id=worker, limit=100, lease_seconds=60)
            batch.append(time.perf_counter() - t)

        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + claim_sql, claim_params)
            raw = cursor.fetchone()[0]
        plan = json.loads(raw) if isinstance(raw, str) else raw
        indexes = sorted(_plan_indexes(plan[0]["Plan"]))
        self.record(
            "CLAIM",
            run,
            setting=f"backlog {backlog:,}",
            backlog=backlog,
            fill_s=round(fill_s, 2),
            claim1_p50_ms=round(pct(one, 50) * 1000, 3),
            claim1_p95_ms=round(pct(one, 95) * 1000, 3),
            claim1_mean_ms=round(statistics.fmean(one) * 1000, 3),
            claim100_mean_ms=round(statistics.fmean(batch) * 1000, 3),
            explain_exec_ms=round(float(plan[0]["Execution Time"]), 3),
            explain_plan_ms=round(float(plan[0]["Planning Time"]), 3),
            indexes=indexes,
            seq_scan_on_stream=_plan_has_seq_scan(plan[0]["Plan"], "hotmesh_django_stream"),
        )

    # memory --------------------------------------------------------------------------

    def rss(self, run: int) -> None:
        """Worker RSS idle, after a W1 load, after a W2 load, and after both again."""
        reset_tables()
        with self.pool(f"rss-{run}") as pool:
            pool.wait_registered()
            time.sleep(3.0)
            idle = pool.rss()
            done = 0
            after: list[list[float]] = []
            for _round in range(2):
                self._enqueue(self.defs.noop, self.cfg.n_w1)
                done += self.cfg.n_w1
                wait_jobs_done(done, pool=pool, timeout=120 + self.cfg.n_w1 / 20)
                after.append(pool.rss())
                self._enqueue(self.defs.three_steps, self.cfg.n_w2)
                done += self.cfg.n_w2
                wait_jobs_done(done, pool=pool, timeout=120 + self.cfg.n_w2 / 5)
                after.append(pool.rss())
        peak = [max(x) if x else None for x in (idle, *after)]
        growth = None if None in (peak[2], peak[4]) else round(peak[4] - peak[2], 1)  # type: ignore[operator]
        self.record(
            "RSS",
            run,
            setting=self.cfg.setting,
            processes=self.cfg.processes,
            idle_mb=_r(peak[0]),
            after_w1_mb=_r(peak[1]),
            after_w2_mb=_r(peak[2]),
            after_w1_again_mb=_r(peak[3]),
            after_w2_again_mb=_r(peak[4]),
            growth_second_round_mb=growth,
            per_process_idle_mb=[round(x, 1) for x in idle],
        )


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _plan_indexes(node: dict[str, Any]) -> set[str]:
    found = {node["Index Name"]} if "Index Name" in node else set()
    for child in node.get("Plans", []):
        found |= _plan_indexes(child)
    return found


def _plan_has_seq_scan(node: dict[str, Any], table: str) -> bool:
    if node.get("Node Type") == "Seq Scan" and node.get("Relation Name") == table:
        return True
    return any(_plan_has_seq_scan(child, table) for child in node.get("Plans", []))


@contextlib.contextmanager
def bench_database(config: BenchConfig, log: Log, *, drop: bool = False) -> Iterator[None]:
    """Select (creating and migrating) the benchmark database for the block.

    A session advisory lock on that database keeps two benchmarks from truncating
    each other's tables.
    """
    from django.conf import settings

    original = connections["default"].settings_dict["NAME"]
    if config.database == original:
        raise BenchError(
            f"refusing to benchmark in the project's own database {original!r}; "
            "pass --database with another name"
        )
    ensure_database(config.database)
    guard = psycopg.connect(**libpq_params(config.database), autocommit=True)
    locked = False
    try:
        row = guard.execute("SELECT pg_try_advisory_lock(hashtext('hotmesh_bench'))").fetchone()
        if not row or not row[0]:
            raise BenchError(
                f"another benchmark is running in database {config.database!r}; "
                "wait for it or pass --database with another name"
            )
        locked = True
        prepare_database(config.database, log)
        debug = settings.DEBUG
        settings.DEBUG = False  # no per-query logging while enqueueing, as in production
        try:
            yield
        finally:
            settings.DEBUG = debug
            use_database(original)
    finally:
        guard.close()
        if drop and locked:
            drop_database(config.database)
            drop_database(claim_database(config.database))
