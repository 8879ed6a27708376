"""Claim, lease and rescue: the queue side of the engine.

Each function is one short transaction. User code never runs inside them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import uuid
from collections.abc import Iterator
from typing import Any

from django.db import connection, transaction
from psycopg.types.json import Jsonb

from hotmesh_django import faults
from hotmesh_django.choices import JobStatus, status_in
from hotmesh_django.engine import early, prepared
from hotmesh_django.engine.complete import enqueue_turn
from hotmesh_django.engine.notify import WORK_CHANNEL, tables
from hotmesh_django.serialization import loads_stored, seal

logger = logging.getLogger(__name__)

# The claim is one statement. MATERIALIZED keeps the LIMIT applied once (Postgres may
# otherwise inline the CTE into the UPDATE); SKIP LOCKED makes concurrent claimers
# pass over each other's rows instead of queueing behind them. The step's and the
# activity job's status move to RUNNING in the same statement, so what the admin
# shows is what the queue holds.
#
# A paused queue claims nothing, checked here and not only against the worker's copy
# of the paused set: that copy may be read a moment before a pause commits, and
# anything enqueued after the pause commits can only be seen by a claim whose
# snapshot sees the pause too.
_CANDIDATES = """
    SELECT id, xmin::text AS locked_version FROM {stream}
     WHERE queue = %(queue)s AND status = 'READY'
       AND NOT EXISTS (SELECT FROM {queue} WHERE name = %(queue)s AND paused)
     ORDER BY priority DESC, id
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
"""

# Chosen ids (by a limiter holding the queue's lock), still ready.
_CHOSEN = """
    SELECT id, xmin::text AS locked_version FROM {stream} AS r
     WHERE id = ANY(%(ids)s) AND status = 'READY'
       AND NOT EXISTS (SELECT FROM {queue} AS q WHERE q.name = r.queue AND q.paused)
     ORDER BY priority DESC, id
       FOR UPDATE SKIP LOCKED
"""

_CLAIM = """
WITH c AS MATERIALIZED ({candidates}), m AS (
    UPDATE {stream} AS s
       SET status = 'RUNNING', worker = %(worker)s, attempts = s.attempts + 1,
           lease_expires_at = now() + make_interval(secs => %(lease)s),
           claimed_at = now()
      FROM c
     WHERE s.id = c.id
 RETURNING s.id, s.kind, s.job_id, s.step, s.name, s.payload, s.attempts, s.queue,
           s.priority, c.locked_version
), a AS (
    UPDATE {activity} AS x
       SET status = 'RUNNING', attempts = m.attempts, started_at = now()
      FROM m
     WHERE x.job_id = m.job_id AND x.seq = m.step AND m.kind IN ('STEP', 'TASK')
       AND x.status IN ('READY', 'RUNNING')
), j AS (
    UPDATE {job} AS x
       SET status = 'RUNNING', started_at = coalesce(x.started_at, now()),
           updated_at = now()
      FROM m
     WHERE x.id = m.job_id AND m.kind = 'TASK' AND {job_ready}
)
SELECT m.id, m.kind, m.job_id, m.step, m.name, m.payload, m.attempts, m.queue,
       j.version, {job_select}
  FROM m LEFT JOIN LATERAL (
        -- A turn's job and steps, read with the claim, so the turn may need no other
        -- read (engine/sticky.py; its write checks the job row's version). Not for
        -- a TIMER: the step it wakes changes, which that path leaves to the usual
        -- one, so the read would be done twice. Not when
        -- the message row locked is newer than this statement's snapshot (a turn
        -- enqueued onto it since, complete._ENQUEUE_TURN): the steps read here
        -- would predate what that transaction wrote.
        SELECT x.*, x.xmin::text AS version FROM {job} AS x
         WHERE x.id = m.job_id AND m.kind = 'TURN'
           AND m.locked_version = (SELECT xmin::text FROM {stream} WHERE id = m.id)
       ) AS j ON true
 -- The candidates' order: a batch is run in the order it is handed to the runners.
 ORDER BY m.priority DESC, m.id
"""

# Promote what is due, wake its queues, and say when the next scheduled message is
# due (the rows promoted here still look SCHEDULED in this statement's snapshot,
# hence the exclusion): one round trip for the whole timer housekeeping.
_PROMOTE = """
WITH d AS (
    SELECT id FROM {stream}
     WHERE status = 'SCHEDULED' AND visible_at <= now()
     ORDER BY visible_at
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
), u AS (
    UPDATE {stream} AS s SET status = 'READY' FROM d WHERE s.id = d.id
    RETURNING s.queue
), q AS (
    SELECT queue, pg_notify('{channel}', 'q:' || queue) FROM (SELECT DISTINCT queue FROM u) AS x
)
SELECT (SELECT coalesce(array_agg(queue), '{{}}') FROM q),
       (SELECT extract(epoch FROM min(visible_at) - clock_timestamp()) FROM {stream}
         WHERE status = 'SCHEDULED' AND id NOT IN (SELECT id FROM d))
"""

_NEXT_DUE = """
SELECT extract(epoch FROM min(visible_at) - clock_timestamp())
  FROM {stream} WHERE status = 'SCHEDULED'
"""

# SKIP LOCKED: a row locked now is being acked, released or deleted with its job,
# and the next beat comes long before the lease ends. Waiting for it could deadlock
# with a cascade deleting many messages in another order.
_EXTEND = """
UPDATE {stream} SET lease_expires_at = now() + make_interval(secs => %(lease)s)
 WHERE id IN (SELECT id FROM {stream}
               WHERE worker = %(worker)s AND status = 'RUNNING'
                 AND id = ANY(%(ids)s::bigint[])
               ORDER BY id
                 FOR UPDATE SKIP LOCKED)
"""

# Rows whose lease ran out, or whose worker said goodbye or went silent.
_EXPIRED = """
SELECT id FROM {stream}
 WHERE status = 'RUNNING' AND kind IN %(kinds)s
   AND (lease_expires_at IS NULL OR lease_expires_at < now()
        OR worker = ANY(%(workers)s::uuid[]))
   FOR UPDATE SKIP LOCKED
"""

# Steps back to READY: the rescue's (expired leases, dead workers: the attempt was
# counted at claim and stays counted, journaled `lease_expired`), or those a stopping
# worker still holds (their code may still be running, in threads about to die with
# the process: `uncounted` = 1 and journaled `released`, since a deploy is not the
# activity's fault, and counting it would fail an activity with max_attempts=1 on
# its first deploy, and any other after as many deploys).
_REQUEUE_STEPS = """
WITH m AS (
    UPDATE {stream} AS s
       SET status = 'READY', worker = NULL, lease_expires_at = NULL,
           attempts = greatest(s.attempts - %(uncounted)s, 0)
     WHERE s.id IN ({held})
 RETURNING s.id, s.kind, s.job_id, s.step, s.name, s.attempts + %(uncounted)s AS attempt,
           s.queue
), a AS (
    UPDATE {activity} AS x SET status = 'READY'
      FROM m WHERE x.job_id = m.job_id AND x.seq = m.step AND x.status = 'RUNNING'
), j AS (
    UPDATE {job} AS x SET status = 'READY', updated_at = now()
      FROM m WHERE x.id = m.job_id AND m.kind = 'TASK' AND {job_running}
), r AS (
    INSERT INTO {journal} (job_id, step, event, name, attempt, data, created_at)
    SELECT job_id, step, %(event)s, name, attempt, %(data)s, now() FROM m
)
SELECT queue, count(*) FROM m GROUP BY queue
"""

# What a stopping worker still holds, of `kinds`.
_HELD = """
SELECT id FROM {stream}
 WHERE worker = %(worker)s AND status = 'RUNNING' AND kind IN %(kinds)s
   FOR UPDATE
"""

_DROP_TURNS = """
DELETE FROM {stream} WHERE id IN ({expired}) RETURNING job_id
"""

# Any number that no other advisory-lock user is likely to pick.
RESCUE_LOCK_KEY = 0x686F746D657368  # "hotmesh"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Claimed:
    """A message this worker holds a lease on."""

    id: int
    kind: str
    job_id: int
    step: int | None
    name: str
    payload: Any
    attempts: int
    queue: str
    # What a sticky turn may run from (engine/sticky.py): for a step, the job as the
    # turn that handed it over left it (a TurnCache); for a turn, its claim's JobRead.
    cache: Any = dataclasses.field(default=None, compare=False, repr=False)
    # The claim's commit, which may still be under way when the message is handed to
    # a runner (engine/early.py): the runner waits for it before running the message.
    commit: early.Commit = dataclasses.field(default=early.COMMITTED, compare=False, repr=False)

    def claim_committed(self) -> bool:
        """Wait for this message's claim to commit; False if it did not (the message
        is still READY and this worker holds no lease on it)."""
        return self.commit.wait()


def claim(*, queue: str, worker_id: uuid.UUID, limit: int, lease_seconds: float) -> list[Claimed]:
    """Claim up to `limit` ready messages of `queue` for `worker_id`.

    Call with no transaction open: the statement commits on its own, so the row
    locks last only as long as the statement.
    """
    sql = _claim_sql(_CANDIDATES)
    params = _claim_params(queue, worker_id, limit, lease_seconds)
    return _run_claim(sql, params)


def _claim_params(
    queue: str, worker_id: uuid.UUID, limit: int, lease_seconds: float
) -> dict[str, Any]:
    return {"queue": queue, "limit": limit, "worker": worker_id, "lease": lease_seconds}


@contextlib.contextmanager
def claim_early(
    *, queue: str, worker_id: uuid.UUID, limit: int, lease_seconds: float
) -> Iterator[list[Claimed]]:
    """As claim(), but yield the messages before the claim's commit has finished
    (engine/early.py), and wait for it on exit. Each message's claim_committed()
    says how the commit ended: hand them to runners inside the block."""
    sql = _claim_sql(_CANDIDATES)
    params = _claim_params(queue, worker_id, limit, lease_seconds)
    faults.point("claim_send")
    with early.rows_then_commit(sql, params) as (rows, commit):
        yield _claimed(rows, commit)
    faults.point("claim", rows)  # as for claim(): once the claim has committed


def claim_ids(*, ids: list[int], worker_id: uuid.UUID, lease_seconds: float) -> list[Claimed]:
    """Claim the messages `ids` that are still ready (a limiter chose them)."""
    sql = _claim_sql(_CHOSEN)
    params: dict[str, Any] = {"ids": ids, "worker": worker_id, "lease": lease_seconds}
    return _run_claim(sql, params)


@functools.cache
def _claim_sql(candidates: str) -> str:
    from hotmesh_django.engine.turn import job_select  # turn.py imports this module

    return _CLAIM.format(
        candidates=candidates.format(**tables()),
        job_select=job_select("j"),
        job_ready=status_in("x.status", JobStatus.READY),
        **tables(),
    )


@dataclasses.dataclass(frozen=True)
class JobRead:
    """A turn's job row as its claim read it: the row's version, then the columns
    turn.job_select() lists."""

    version: str
    row: tuple[Any, ...]


def _run_claim(sql: str, params: dict[str, Any]) -> list[Claimed]:
    with prepared.cursor() as cursor:
        faults.point("claim_send")
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    faults.point("claim", rows)
    return _claimed(rows, early.COMMITTED)


def _claimed(rows: list[Any], commit: early.Commit) -> list[Claimed]:
    n = len(_FIELDS)
    return [
        Claimed(
            id=row[0],
            kind=row[1],
            job_id=row[2],
            step=row[3],
            name=row[4],
            payload=loads_jsonb(row[5]),
            attempts=row[6],
            queue=row[7],
            cache=None if row[n] is None else JobRead(row[n], tuple(row[n + 1 :])),
            commit=commit,
        )
        for row in rows
    ]


def loads_jsonb(value: Any) -> Any:
    """A jsonb column as raw SQL returns it: Django loads jsonb as text (JSONField
    decodes it itself), so decode it here (see serialization.loads_stored)."""
    return loads_stored(value) if isinstance(value, str | bytes) else value


_FIELDS = ("id", "kind", "job_id", "step", "name", "payload", "attempts", "queue")


def promote_due(limit: int = 1000) -> tuple[set[str], float | None]:
    """Make due timers, retries and delayed starts claimable and wake their queues.

    Return the queues that got work, and the seconds until the next scheduled
    message is due (None: nothing is scheduled; <= 0: more is due now).
    """
    with prepared.cursor() as cursor:
        cursor.execute(_PROMOTE.format(channel=WORK_CHANNEL, **tables()), {"limit": limit})
        row = cursor.fetchone()
    if row is None:
        return set(), None
    return set(row[0]), None if row[1] is None else float(row[1])


def seconds_until_next_due() -> float | None:
    """Return seconds until the earliest scheduled message is due (<= 0: due now)."""
    with connection.cursor() as cursor:
        cursor.execute(_NEXT_DUE.format(**tables()))
        row = cursor.fetchone()
    return None if row is None or row[0] is None else float(row[0])


_READY_EXISTS = """
SELECT EXISTS (SELECT 1 FROM {stream}
                WHERE status = 'READY' AND (%(every)s OR queue = ANY(%(queues)s))
                  AND NOT queue = ANY(%(excluded)s))
"""


def ready_exists(*, queues: list[str] | None, excluded: list[str]) -> bool:
    """Whether a READY message waits in `queues` (None: any), not counting `excluded`.

    Without SKIP LOCKED: a claim that came back empty may only have passed over a
    row another transaction held at that instant, which is not "nothing to do".
    """
    params: dict[str, Any] = {"every": queues is None, "queues": queues or [], "excluded": excluded}
    with connection.cursor() as cursor:
        cursor.execute(_READY_EXISTS.format(**tables()), params)
        row = cursor.fetchone()
    return bool(row and row[0])


def extend_leases(*, worker_id: uuid.UUID, ids: list[int], lease_seconds: float) -> int:
    """Extend the leases of the messages `ids` that `worker_id` still holds."""
    if not ids:
        return 0
    params: dict[str, Any] = {"worker": worker_id, "ids": ids, "lease": lease_seconds}
    with connection.cursor() as cursor:
        cursor.execute(_EXTEND.format(**tables()), params)
        return int(cursor.rowcount)


def requeue_expired(*, workers: list[uuid.UUID]) -> int:
    """Put back the messages of dead workers and expired leases; return how many.

    A requeued step counts its attempt (it was counted at claim) and gets a
    `lease_expired` journal entry. A turn or timer is dropped and the job's next turn
    queued instead, since a turn is idempotent and at most one may be ready per job.
    """
    expired = _EXPIRED.format(**tables())
    params = {"workers": workers, "uncounted": 0, "event": "lease_expired", "data": None}
    queues, jobs = _requeue(expired, params)
    if queues or jobs:
        logger.info("rescued queues=%s turns=%s", sorted(queues), jobs)
    return sum(queues.values()) + jobs


def release_held(worker_id: uuid.UUID) -> int:
    """Give back everything `worker_id` still holds, as it stops; return how many.

    Steps go back to READY with their attempt uncounted and a `released` journal
    entry; a turn or timer is dropped and the job's next turn queued, as the rescue
    does.
    """
    params = {
        "worker": worker_id,
        "uncounted": 1,
        "event": "released",
        "data": Jsonb(seal({"reason": "the worker stopped before the step finished"})),
    }
    queues, jobs = _requeue(_HELD.format(**tables()), params)
    return sum(queues.values()) + jobs


def _requeue(held: str, params: dict[str, Any]) -> tuple[dict[str, int], int]:
    """Requeue the steps and drop the turns that the query `held` (with a %(kinds)s
    placeholder) selects; return the steps requeued per queue and the turns dropped."""
    t = tables()
    running = status_in("x.status", JobStatus.RUNNING)
    with transaction.atomic(), connection.cursor() as cursor:
        steps = held.replace("%(kinds)s", "('STEP', 'TASK')")
        cursor.execute(_REQUEUE_STEPS.format(held=steps, job_running=running, **t), params)
        queues = {queue: int(n) for queue, n in cursor.fetchall()}
        turns = held.replace("%(kinds)s", "('TURN', 'TIMER')")
        cursor.execute(_DROP_TURNS.format(expired=turns, **t), params)
        jobs = {row[0] for row in cursor.fetchall()}
        for job_id in jobs:
            enqueue_turn(job_id)
        for queue in queues:
            cursor.execute("SELECT pg_notify(%s, %s)", [WORK_CHANNEL, f"q:{queue}"])
    return queues, len(jobs)


def rescue(*, stale_seconds: float) -> int:
    """As whichever worker wins the advisory lock, forget silent workers and requeue
    expired leases. Return how many messages moved (0 if another worker holds it).

    A worker is silent when it has not been seen for `stale_seconds` (the rescuer's
    own bound) or for its own, whichever is longer: a worker with a longer lease and
    heartbeat than the rescuer's is alive between its beats.
    """
    t = tables()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [RESCUE_LOCK_KEY])
        won = cursor.fetchone()
        if not won or not won[0]:
            return 0
        cursor.execute(
            f"DELETE FROM {t['worker']} "  # noqa: S608 - table name from _meta
            "WHERE last_seen < now() - make_interval(secs => greatest(%s, stale_seconds)) "
            "RETURNING id",
            [stale_seconds],
        )
        dead = [row[0] for row in cursor.fetchall()]
        if dead:
            logger.warning("workers gone silent ids=%s", [str(d) for d in dead])
        return requeue_expired(workers=dead)
