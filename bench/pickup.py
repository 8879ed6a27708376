"""The pickup floor: W3's idle pickup latency for a bare LISTEN/NOTIFY queue.

What pgbench is to W1, this is to W3: the least any durable Postgres queue can do on
this machine for one job at a random gap. The producer inserts one row and NOTIFYs
in one transaction (synchronous_commit on: the job is durable when the call
returns); a consumer in another process, idle in LISTEN, claims the row with one
`UPDATE ... SKIP LOCKED` that commits (the claim is durable), and stamps the time.
Latency = stamp - the moment before the insert, as W3 measures ours. One table, one
index, no ORM, no threads: nothing an engine could leave out.

Run as `python -m bench.pickup DSN MARK_FILE` it is that consumer.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from bench.workloads import BenchError, MarkReader, ensure_database, latency_fields, libpq_params

Log = Callable[[str], None]
Record = dict[str, Any]

_TABLE = "pickup_q"
_CHANNEL = "pickup_q"

_CLAIM = f"""
UPDATE {_TABLE} SET state = 'running'
 WHERE id = (SELECT id FROM {_TABLE} WHERE state = 'ready' ORDER BY id LIMIT 1
               FOR UPDATE SKIP LOCKED)
RETURNING payload
"""


def consume(dsn: str, mark_file: str) -> None:
    """Claim a row per NOTIFY until killed; append "<key> <unix time>" lines."""
    with psycopg.connect(dsn, autocommit=True) as conn, open(mark_file, "a") as out:
        conn.execute("SET synchronous_commit = on")
        conn.execute(f"LISTEN {_CHANNEL}")
        print("ready", flush=True)
        while True:
            # The generator holds the connection until it ends: take one and claim.
            for _note in conn.notifies(stop_after=1):
                pass
            row = conn.execute(_CLAIM).fetchone()
            if row is not None:
                out.write(f"{row[0]} {time.time():.6f}\n")
                out.flush()


def run_pickup_floor(*, runs: int, n: int, out_dir: Path, log: Log) -> list[Record]:
    """Measure the floor `runs` times, `n` jobs each, at random 0.2-0.6 s gaps."""
    from bench.peers import PGLIMIT_DB

    ensure_database(PGLIMIT_DB)
    params = libpq_params(PGLIMIT_DB)
    dsn = make_conninfo(**{k: str(v) for k, v in params.items()})
    records = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = on")
        for run in range(runs):
            conn.execute(f"DROP TABLE IF EXISTS {_TABLE}")
            conn.execute(
                f"CREATE TABLE {_TABLE} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
                " state text NOT NULL, payload text NOT NULL)"
            )
            conn.execute(f"CREATE INDEX {_TABLE}_ready ON {_TABLE} (id) WHERE state = 'ready'")
            marks = MarkReader(out_dir / f"marks-pickup-{run}.txt")
            lats = _probe(conn, dsn, marks, n)
            marks.path.unlink(missing_ok=True)
            rec: Record = {
                "ts": time.time(),
                "bench": "pglimit",
                "workload": "pickup",
                "synchronous_commit": "on",
                "clients": 1,
                "run": run,
                "n": n,
                **latency_fields(lats),
            }
            records.append(rec)
            log(f"  pickup floor run={run}: p50 {rec['p50_ms']} ms, p95 {rec['p95_ms']} ms")
        conn.execute(f"DROP TABLE IF EXISTS {_TABLE}")
    return records


def _probe(conn: psycopg.Connection[Any], dsn: str, marks: MarkReader, n: int) -> list[float]:
    consumer = subprocess.Popen(  # noqa: S603 - our own module, our own arguments
        [sys.executable, "-m", "bench.pickup", dsn, str(marks.path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert consumer.stdout is not None
        if consumer.stdout.readline().strip() != "ready":
            raise BenchError("the pickup-floor consumer did not start")
        lats = []
        for i in range(-1, n):  # -1: a warm-up, not counted
            time.sleep(random.uniform(0.2, 0.6))  # noqa: S311 - a random phase, not a secret
            key = f"p{i}"
            t0 = time.time()
            with conn.transaction():
                conn.execute(f"INSERT INTO {_TABLE} (state, payload) VALUES ('ready', %s)", [key])
                conn.execute(f"NOTIFY {_CHANNEL}")
            stamp = marks.wait(key, timeout=30)
            if i >= 0:
                lats.append(stamp - t0)
        return lats
    finally:
        consumer.kill()
        consumer.wait(timeout=10)


if __name__ == "__main__":
    consume(sys.argv[1], sys.argv[2])
