"""What our data model allows: W1's durable job lifecycle as SQL alone, run by pgbench.

The pgbench limit (bench/peers.py) measures a bare queue: one table, one partial
index, one UPDATE per row. A durable job in this engine also moves its Job and
Activity rows through READY, RUNNING and SUCCESSFUL and journals the outcome, in a
claim and an ack that must be separate transactions (user code runs between them,
after the claim commits). These two scripts say how much of the gap between W1 and
claim100 is that data model, and how much is the worker's Python:

- engine100: the engine's own claim statement and its own batched ack statement
  (taken from engine/claim.py and engine/acks.py, so they follow the code), 100
  activity jobs per claim, with no Python between them. No worker can drain faster
  than this; W1 / engine100 is the share the workers reach.
- contract100: the least DESIGN.md's data model asks of a durable job, hand-written:
  the claim moves the message and its Job to RUNNING, the ack deletes the message,
  moves the Job to SUCCESSFUL with its output and journals `completed` (no Activity
  row, no step_completed event, no lease check beyond the worker's own rows).
- stream100: a claim and a delete of 100 rows of the Stream table alone, with its
  real indexes: the floor of any design that keeps DESIGN.md's Stream queue, before
  a single Job, Activity or Journal row is written.

All three run in the benchmark database, on tables the engine's migrations made,
after our workloads (they truncate those tables).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg

from bench import peers
from bench.workloads import libpq_params, reset_tables

Log = Callable[[str], None]
Record = dict[str, Any]

WORKLOADS = ("engine100", "contract100", "stream100")
QUEUE = "bound"
# One worker id per pgbench client: the ack takes back what that client claimed.
_WORKER = "md5(:client_id::text)::uuid"
# Jobs queued before a run, per second of run: enough that the queue never runs dry.
_PREFILL_PER_S = {"engine100": 40_000, "contract100": 50_000, "stream100": 100_000}


def _substitute(statement: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        statement = statement.replace(f"%({name})s", value)
    if "%(" in statement:
        raise ValueError(f"a parameter was left unbound in: {statement[:200]}")
    return statement.strip()


def engine_script() -> str:
    """The engine's claim, then its batched ack of everything the claim took."""
    from hotmesh_django.engine import acks, claim
    from hotmesh_django.engine.notify import tables

    claimed = _substitute(
        claim._claim_sql(claim._CANDIDATES),
        {"queue": f"'{QUEUE}'", "limit": "100", "worker": _WORKER, "lease": "30"},
    )
    # The ack document the worker would build from what it ran (engine/acks.py).
    document = (
        "(SELECT coalesce(jsonb_agg(jsonb_build_object("
        "'id', id, 'output', 'null'::jsonb, 'attempts', attempts, 'step', step, 'name', name)"
        f" ORDER BY id), '[]') FROM {tables()['stream']}"
        f" WHERE worker = {_WORKER} AND status = 'RUNNING')"
    )
    acked = _substitute(acks._ack_batch_sql(), {"acks": document, "worker": _WORKER})
    # Each statement commits on its own, as the worker's do (autocommit).
    return f"{claimed};\n{acked};\n"


def contract_script() -> str:
    """The contract's minimum: message and Job to RUNNING; message gone, Job done, journaled."""
    from hotmesh_django.engine.notify import tables

    t = tables()
    return (
        f"WITH m AS (UPDATE {t['stream']} AS s SET status = 'RUNNING', worker = {_WORKER},"
        " attempts = s.attempts + 1, lease_expires_at = now() + interval '30 seconds',"
        " claimed_at = now()"
        f" FROM (SELECT id FROM {t['stream']} WHERE queue = '{QUEUE}' AND status = 'READY'"
        " ORDER BY priority DESC, id LIMIT 100 FOR UPDATE SKIP LOCKED) AS c"
        " WHERE s.id = c.id RETURNING s.job_id)"
        f" UPDATE {t['job']} AS j SET status = 'RUNNING', started_at = now(), updated_at = now()"
        " FROM m WHERE j.id = m.job_id AND j.status = 'READY';\n"
        f"WITH m AS (DELETE FROM {t['stream']} WHERE worker = {_WORKER} AND status = 'RUNNING'"
        " RETURNING job_id),"
        f" j AS (UPDATE {t['job']} AS j SET status = 'SUCCESSFUL', output = 'null',"
        " finished_at = now(), updated_at = now()"
        " FROM m WHERE j.id = m.job_id AND j.status = 'RUNNING' RETURNING j.id)"
        f" INSERT INTO {t['journal']} (job_id, event, name, created_at)"
        " SELECT id, 'completed', '', now() FROM j;\n"
    )


def stream_script() -> str:
    """A claim of 100 Stream rows, then their delete: the queue table on its own."""
    from hotmesh_django.engine.notify import tables

    stream = tables()["stream"]
    return (
        f"UPDATE {stream} AS s SET status = 'RUNNING', worker = {_WORKER},"
        " attempts = s.attempts + 1, lease_expires_at = now() + interval '30 seconds',"
        " claimed_at = now()"
        f" FROM (SELECT id FROM {stream} WHERE queue = '{QUEUE}' AND status = 'READY'"
        " ORDER BY priority DESC, id LIMIT 100 FOR UPDATE SKIP LOCKED) AS c"
        " WHERE s.id = c.id;\n"
        f"DELETE FROM {stream} WHERE worker = {_WORKER} AND status = 'RUNNING';\n"
    )


def _prefill(conn: psycopg.Connection[Any], n: int) -> None:
    """Queue `n` activity jobs as start() writes them: job, step, message, journal."""
    from hotmesh_django.engine.notify import tables
    from hotmesh_django.serialization import encode_call_text

    t = tables()
    call = encode_call_text((), {})
    conn.execute(
        f"""
        WITH j AS (
            INSERT INTO {t["job"]} (workflow_id, name, kind, queue, status, priority, input,
                                  search, state, created_at, updated_at)
            SELECT gen_random_uuid()::text, 'bench.noop', 'ACTIVITY', %(queue)s, 'READY', 0,
                   %(call)s::jsonb, '{{}}', '{{}}', now(), now()
              FROM generate_series(1, %(n)s)
            RETURNING id
        ), a AS (
            INSERT INTO {t["activity"]} (job_id, seq, kind, name, queue, status, attempts,
                                       input, created_at)
            SELECT id, 1, 'ACTIVITY', 'bench.noop', %(queue)s, 'READY', 0, %(call)s::jsonb,
                   now() FROM j
        ), s AS (
            INSERT INTO {t["stream"]} (queue, kind, job_id, step, name, payload, priority,
                                     status, visible_at, attempts, created_at)
            SELECT %(queue)s, 'TASK', id, 1, 'bench.noop', %(call)s::jsonb, 0, 'READY', now(),
                   0, now() FROM j
        )
        INSERT INTO {t["journal"]} (job_id, event, name, created_at)
        SELECT id, 'created', 'bench.noop', now() FROM j
        """,
        {"queue": QUEUE, "call": call, "n": n},
    )
    for table in ("job", "activity", "stream", "journal"):
        conn.execute(f"VACUUM ANALYZE {t[table]}")
    conn.execute("CHECKPOINT")


def _done(conn: psycopg.Connection[Any], workload: str, queued: int) -> tuple[int, int]:
    """(jobs finished, messages still ready)."""
    from hotmesh_django.engine.notify import tables

    t = tables()
    ready = conn.execute(f"SELECT count(*) FROM {t['stream']} WHERE status = 'READY'").fetchone()
    left = int(ready[0]) if ready else 0
    if workload != "stream100":
        row = conn.execute(
            f"SELECT count(*) FROM {t['job']} WHERE status = 'SUCCESSFUL'"
        ).fetchone()
        return (int(row[0]) if row else 0), left
    row = conn.execute(f"SELECT count(*) FROM {t['stream']}").fetchone()
    return queued - (int(row[0]) if row else 0), left


def run_model_bound(
    *,
    database: str,
    runs: int,
    clients: Sequence[int],
    duration: int,
    log: Log,
    on_record: Callable[[Record], None],
) -> list[Record]:
    """Run engine100, contract100 and stream100 with pgbench in `database` (migrated)."""
    binary = peers.pgbench_binary()
    if binary is None:
        missing: Record = {"ts": time.time(), "bench": "pglimit", "error": "pgbench not found"}
        on_record(missing)
        return [missing]
    params = libpq_params(database)
    env = {**os.environ, **peers.libpq_env(params)}
    scripts = {
        "engine100": engine_script(),
        "contract100": contract_script(),
        "stream100": stream_script(),
    }
    records: list[Record] = []
    with (
        tempfile.TemporaryDirectory(prefix="hotmesh-bound-") as tmp,
        psycopg.connect(**params, autocommit=True) as conn,
    ):
        for workload in WORKLOADS:
            path = Path(tmp) / f"{workload}.sql"
            path.write_text(scripts[workload])
            for n_clients in clients:
                for run in range(runs):
                    reset_tables()
                    queued = _PREFILL_PER_S[workload] * max(duration, 2)
                    _prefill(conn, queued)
                    # Prepared, as the engine prepares its statements.
                    proc = peers.run_pgbench(
                        binary, path, n_clients, duration, database, env, protocol="prepared"
                    )
                    rec = peers.pgbench_record(
                        workload, n_clients, run, duration, _parse(proc, conn, workload, queued)
                    )
                    records.append(rec)
                    on_record(rec)
                    log(
                        f"  bound {workload} clients={n_clients} run={run}: "
                        f"{rec.get('rows_per_s', rec.get('error'))}"
                    )
        reset_tables()
    return records


def _parse(
    proc: subprocess.CompletedProcess[str],
    conn: psycopg.Connection[Any],
    workload: str,
    queued: int,
) -> Record:
    out = proc.stdout + proc.stderr
    stats = peers.pgbench_stats(out)
    if proc.returncode != 0 or stats is None:
        return {"error": out[-500:]}
    done, left = _done(conn, workload, queued)
    if left == 0:
        return {"error": "the queue ran dry during the run; raise the prefill"}
    tps, txs = stats
    elapsed = txs / tps if tps else 0.0
    return {
        "tps": round(tps, 1),
        "rows_per_s": round(done / elapsed, 1) if elapsed else 0.0,
        "txs": txs,
        "rows": done,
    }
