"""Group the success acks of activity jobs: one statement and one commit per batch.

A standalone activity job (a TASK message) ends with an ack that drops its message,
records the step, finishes the job and journals both. Done one by one, each ack is a
round trip, a parse and plan of the statement and a commit: that, not the activity,
is what caps a queue of short jobs. A worker process therefore hands these acks to
one `AckBatcher` thread, which writes everything handed to it since its last commit
in one statement. Nothing waits for a batch to fill: an idle worker acks a single
job at once, a busy one acks whatever piled up while the previous batch committed
(group commit).

Durability is unchanged. A job is done only once its batch commits; until then its
message stays RUNNING under this worker's lease, and a crash before the commit
re-runs it elsewhere, exactly as a crash between an activity's return and its own
ack always has (activities are at-least-once; `atomic=True` ones, whose writes must
share the ack's transaction, are never batched). Every ack stays guarded by the
message id, this worker's id and the RUNNING status, so a message whose lease was
lost in the meantime is simply not acked.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, connection
from psycopg.types.json import Jsonb

from hotmesh_django import faults, signals
from hotmesh_django.choices import ACTIVE_STATUSES, FINISHED_STATUSES, StreamStatus, status_in
from hotmesh_django.engine import prepared
from hotmesh_django.engine.claim import Claimed
from hotmesh_django.engine.notify import DONE_CHANNEL, tables
from hotmesh_django.models import Job
from hotmesh_django.serialization import seal

logger = logging.getLogger(__name__)

# The job rows an ack may finish (see choices.status_in).
_ACTIVE_T = status_in("t.status", *ACTIVE_STATUSES)
_HELD_S = status_in("s.status", StreamStatus.RUNNING, choices=StreamStatus)

# Acks per statement. Bounded so one statement's locks and WAL stay small.
MAX_BATCH = 500
# A batch that fails on a lost connection is retried this many times (reconnecting
# with a growing pause) before its jobs are left to the lease rescue.
CONNECTION_RETRIES = 4

# The batch travels as one JSON document. Messages are locked in id order, the order
# every batch and the single ack take them in. Returns the ids acked, the ids of the
# jobs it finished, and how many finish notifications it sent.
_ACK_BATCH = """
WITH x AS (
    SELECT * FROM jsonb_to_recordset(%(acks)s)
        AS x(id bigint, output jsonb, attempts integer, step integer, name text)
), m AS (
    DELETE FROM {stream} AS s
     USING x
     WHERE s.id = x.id AND s.worker = %(worker)s AND s.attempts = x.attempts AND {held}
 RETURNING s.id, s.job_id, x.output, x.attempts, x.step, x.name
), a AS (
    UPDATE {activity} AS t
       SET status = 'SUCCESSFUL', output = m.output, error = NULL,
           attempts = m.attempts, finished_at = now()
      FROM m WHERE t.job_id = m.job_id AND t.seq = m.step
), j AS (
    UPDATE {job} AS t
       SET status = 'SUCCESSFUL', output = m.output, error = NULL,
           finished_at = now(), updated_at = now()
      FROM m WHERE t.id = m.job_id AND {job_active}
 RETURNING t.id, t.watched
), r AS (
    INSERT INTO {journal} (job_id, step, event, name, attempt, data, created_at)
    SELECT job_id, step, 'step_completed', name, attempts, NULL::jsonb, now() FROM m
    UNION ALL
    SELECT id, NULL::int, 'completed', '', NULL::int, NULL::jsonb, now() FROM j
)
SELECT (SELECT coalesce(array_agg(id), '{{}}') FROM m),
       (SELECT coalesce(array_agg(id), '{{}}') FROM j),
       (SELECT count(*) FROM (SELECT pg_notify('{done}', id::text) FROM j WHERE watched) AS n)
"""


@functools.cache
def _ack_batch_sql() -> str:
    return _ACK_BATCH.format(done=DONE_CHANNEL, job_active=_ACTIVE_T, held=_HELD_S, **tables())


def ack_tasks(worker_id: uuid.UUID, items: list[tuple[Claimed, Any]]) -> tuple[set[int], set[int]]:
    """Ack the successful TASK messages `items` ((message, stored output) pairs) in one
    statement; return (message ids acked, job ids finished)."""
    items = sorted(items, key=lambda item: item[0].id)
    document = [
        {
            "id": message.id,
            "output": seal(output),
            "attempts": message.attempts,
            "step": message.step,
            "name": message.name,
        }
        for message, output in items
    ]
    params: dict[str, Any] = {"acks": Jsonb(document), "worker": worker_id}
    with prepared.cursor() as cursor:
        faults.point("ack_send")
        cursor.execute(_ack_batch_sql(), params)
        row = cursor.fetchone()
    if row is None:
        return set(), set()
    return set(row[0]), set(row[1])


def say_dropped(messages: list[Claimed]) -> None:
    """Log the results that were not acked: a warning for a lost lease, but only a
    debug line when the job had already ended (a cancel, a parent's end, a deadline):
    then dropping the result is what should happen."""
    if not messages:
        return
    try:
        finished = set(
            Job.objects.filter(
                pk__in={m.job_id for m in messages}, status__in=FINISHED_STATUSES
            ).values_list("pk", flat=True)
        )
    except DatabaseError:
        finished = set()
    for message in messages:
        if message.job_id in finished:
            logger.debug("job ended, result dropped job=%s step=%s", message.job_id, message.step)
        else:
            logger.warning(
                "lease lost, result dropped job=%s step=%s", message.job_id, message.step
            )


class AckBatcher:
    """A thread that acks the TASK messages runner threads hand it, in batches.

    `on_done(message, acked)` is called for every message once its fate is known:
    acked (committed), or not (its lease was lost, or the database stayed away).
    """

    def __init__(
        self,
        *,
        worker_id: uuid.UUID,
        on_done: Callable[[Claimed, bool], None],
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.worker_id = worker_id
        self._on_done = on_done
        self._max_batch = max_batch
        self._pending: list[tuple[Claimed, Any]] = []
        self._ready = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="hotmesh-ack", daemon=True)
        self.batches = 0

    def start(self) -> AckBatcher:
        self._thread.start()
        return self

    def submit(self, message: Claimed, output: Any) -> None:
        """Queue the success ack of `message` with its (encoded) `output`."""
        with self._ready:
            self._pending.append((message, output))
            self._ready.notify()

    def close(self, timeout: float | None = None) -> None:
        """Ack what is queued, then stop the thread."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while True:
                with self._ready:
                    while not self._pending and not self._closing:
                        self._ready.wait()
                    if not self._pending:
                        return
                    batch = self._pending[: self._max_batch]
                    del self._pending[: self._max_batch]
                self._flush(batch)
        finally:
            connection.close()

    def _flush(self, batch: list[tuple[Claimed, Any]]) -> None:
        acked, finished = self._write(batch)
        self.batches += 1
        names = {message.job_id: message.name for message, _ in batch}
        for job_id in finished:
            signals.finished(job_id=job_id, name=names[job_id], status="SUCCESSFUL")
        say_dropped([message for message, _ in batch if message.id not in acked])
        for message, _ in batch:
            done = message.id in acked
            faults.point("ack_commit", done)
            self._on_done(message, done)

    def _write(self, batch: list[tuple[Claimed, Any]]) -> tuple[set[int], set[int]]:
        """Write the batch; on a lost connection retry, on any other error ack one by
        one so that one bad row cannot sink the others."""
        for attempt in range(CONNECTION_RETRIES + 1):
            try:
                return ack_tasks(self.worker_id, batch)
            except (OperationalError, InterfaceError) as exc:
                if attempt == CONNECTION_RETRIES:
                    logger.warning(
                        "acks not written, their leases will expire count=%s error=%s",
                        len(batch),
                        exc,
                    )
                    return set(), set()
                connection.close()
                time.sleep(0.1 * 2**attempt)
            except DatabaseError:
                if len(batch) == 1:
                    logger.exception("ack failed job=%s", batch[0][0].job_id)
                    return set(), set()
                break
        acked: set[int] = set()
        finished: set[int] = set()
        for item in batch:
            one_acked, one_finished = self._write([item])
            acked |= one_acked
            finished |= one_finished
        return acked, finished
