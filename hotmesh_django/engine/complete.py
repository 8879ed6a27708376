"""Shared write paths: wake a job for its next turn, and finish a job.

Both run inside the caller's transaction, so a step's outcome, the job's next turn
and the parent's wake-up commit together or not at all.
"""

from __future__ import annotations

import functools
import logging
import traceback as tb
from typing import Any

from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models import QuerySet
from django.db.models.functions import Now
from psycopg.types.json import Jsonb

from hotmesh_django import signals
from hotmesh_django.engine import prepared
from hotmesh_django.engine.notify import DONE_CHANNEL, WORK_CHANNEL, tables
from hotmesh_django.models import (
    ACTIVE_STATUSES,
    Activity,
    Job,
    JobStatus,
    Journal,
    JournalEvent,
    Stream,
    StreamKind,
    StreamStatus,
    sources_of,
)
from hotmesh_django.serialization import seal, storable_text

logger = logging.getLogger(__name__)

# ON CONFLICT names the partial unique index's predicate, so at most one READY turn
# per job exists: many completions at once collapse into one replay.
#
# A collapse must not let that READY turn be claimed and replayed before this
# transaction commits: the replay would not see what this transaction wrote (a
# step's result, a signal), and nothing else would be queued for it. DO UPDATE
# (instead of DO NOTHING) row-locks the queued turn until then, so SKIP LOCKED
# claims pass it over, and its new row version tells a claim that locked it
# meanwhile that its snapshot is older than this write (claim.py).
_ENQUEUE_TURN = """
WITH t AS (
    INSERT INTO {stream} AS s (queue, kind, job_id, name, priority, status, visible_at,
                               attempts, created_at)
    SELECT queue, 'TURN', id, name, priority, 'READY', statement_timestamp(), 0,
           statement_timestamp()
      FROM {job}
     WHERE id = %s AND status IN ('READY', 'RUNNING', 'WAITING')
    ON CONFLICT (job_id) WHERE kind = 'TURN' AND status = 'READY'
    DO UPDATE SET visible_at = least(s.visible_at, excluded.visible_at)
    RETURNING queue
)
SELECT pg_notify('{channel}', 'q:' || queue) FROM t
"""


def timer_message(job: Job, step: Activity) -> Stream:
    """Return the (unsaved) timer message that wakes `job` when `step` is due."""
    timer = job_timer(job, step.wake_at or Now())
    timer.step = step.seq
    return timer


def job_timer(job: Job, due: Any) -> Stream:
    """Return an (unsaved) timer that runs `job`'s next turn at `due`: its deadline,
    its delayed start, or another look at a job put aside."""
    return Stream(
        queue=job.queue,
        kind=StreamKind.TIMER,
        job=job,
        name=job.name,
        priority=job.priority,
        status=StreamStatus.SCHEDULED,
        visible_at=due,
    )


def job_timers(job: Job, using: str = DEFAULT_DB_ALIAS) -> QuerySet[Stream]:
    """The job's scheduled step-less timers (job_timer) other than its deadline's:
    a delayed start, or a look again at a job put aside."""
    timers = Stream.objects.using(using).filter(
        job=job, kind=StreamKind.TIMER, step__isnull=True, status=StreamStatus.SCHEDULED
    )
    if job.deadline_at is not None:
        timers = timers.exclude(visible_at=job.deadline_at)  # the timeout's own timer
    return timers


def error_dict(exc: BaseException, *, with_traceback: bool = True) -> dict[str, Any]:
    """Describe an exception as stored in `error` columns.

    Whatever the exception holds, the result can be stored: a message with a NUL or
    a lone surrogate (Postgres refuses both) is escaped, and an exception whose
    __str__ raises is described by its type. Otherwise the failure itself could not
    be written, and the step would sit RUNNING until its lease ran out, its real
    error lost.
    """
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the failure
        message = f"<{type(exc).__name__} whose str() raised>"
    data: dict[str, Any] = {
        "type": storable_text(type(exc).__name__),
        "message": storable_text(message[:10_000]),
    }
    if with_traceback:
        data["traceback"] = storable_text("".join(tb.format_exception(exc))[-20_000:])
    return data


def enqueue_turn(job_id: int) -> None:
    """Queue the next turn of job `job_id` unless one is already queued or it ended."""
    with prepared.cursor() as cursor:
        cursor.execute(_ENQUEUE_TURN.format(channel=WORK_CHANNEL, **tables()), [job_id])


_FINAL_EVENTS = {
    JobStatus.SUCCESSFUL: JournalEvent.COMPLETED,
    JobStatus.FAILED: JournalEvent.FAILED,
    JobStatus.CANCELLED: JournalEvent.CANCELLED,
}


# Finishing a job in one statement: the guarded status move, dropping its queued
# messages (running ones too: their guarded acks will find nothing and discard the
# late result), closing its open steps so the admin never shows them running,
# cancelling its open human tasks, the journal entry and the wake-up of result()
# waiters.
_FINISH = """
WITH j AS (
    UPDATE {job}
       SET status = %(status)s, output = %(output)s, error = %(error)s,
           finished_at = statement_timestamp(), updated_at = statement_timestamp()
     WHERE id = %(id)s AND status = ANY(%(sources)s)
 RETURNING id, parent_id, parent_step, name, watched
), d AS (
    DELETE FROM {stream} AS s USING j WHERE s.job_id = j.id
), a AS (
    UPDATE {activity} AS x SET status = 'CANCELLED', finished_at = statement_timestamp()
      FROM j WHERE x.job_id = j.id AND x.status IN ('READY', 'RUNNING', 'WAITING')
), h AS (
    UPDATE {human_task} AS t SET status = 'CANCELLED', updated_at = statement_timestamp()
      FROM j WHERE t.job_id = j.id AND t.status IN ('OPEN', 'CLAIMED')
), r AS (
    INSERT INTO {journal} (job_id, step, event, name, attempt, data, created_at)
    SELECT id, NULL, %(event)s, '', NULL, %(data)s, statement_timestamp() FROM j
)
SELECT parent_id, parent_step, name,
       (SELECT count(*) FROM (SELECT pg_notify('{done}', id::text) FROM j WHERE watched) AS n)
  FROM j
"""


# Lock a job about to finish. Its row is locked before any child's: the order a
# parent's turn takes them in (its own row, then children it starts or cancels),
# while a finishing child locks its own row and then only the parent's step, never
# the parent's job row. Cancelling the children before the parent's own finish
# (which closes the parent's steps) keeps it that way.
_LOCK_JOB = "SELECT status, workflow_id FROM {job} WHERE id = %s FOR NO KEY UPDATE"

# Its active children, in a statement of its own: under READ COMMITTED a statement
# that waited for the lock above reads other rows in the snapshot it took before
# waiting, and would miss children that the lock's holder (a turn) just started.
_ACTIVE_CHILDREN = """
SELECT id FROM {job}
 WHERE parent_id = %s AND status IN ('READY', 'RUNNING', 'WAITING') ORDER BY id
"""

# Rounds of looking for children again (see finish_tree); far more than any race.
_CHILD_ROUNDS = 100


def finish_job(
    job_id: int,
    status: JobStatus,
    *,
    output: Any = None,
    error: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> bool:
    """Move job `job_id` to a final status, drop its queued messages, tell its parent.

    Its active children are cancelled first: its steps waiting for them are closed
    as CANCELLED, so nothing would ever read their outcome, and a workflow that
    timed out or failed must not leave work running under it. Return False (and
    write nothing) when the job is no longer active.
    """
    return finish_tree(job_id, status, output=output, error=error, data=data) > 0


def finish_tree(
    job_id: int,
    status: JobStatus,
    *,
    output: Any = None,
    error: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    children_error: dict[str, Any] | None = None,
    children_data: dict[str, Any] | None = None,
    wake_parent: bool = True,
) -> int:
    """As finish_job(); return how many jobs ended: this one and its active
    descendants, cancelled with `children_error` (by default, saying the parent
    ended). 0 when the job is no longer active."""
    t = tables()
    with prepared.cursor() as cursor:
        cursor.execute(_LOCK_JOB.format(**t), [job_id])
        locked = cursor.fetchone()
    if locked is None or locked[0] not in sources_of(status):
        return 0
    if children_error is None:
        children_error = {
            "type": "JobCancelled",
            "message": f"Its parent workflow {locked[1]!r} ended ({status}).",
        }
    ended = 0
    # Looked for again until none is left: a child that continues as new under
    # this parent commits its next run while we wait for its row's lock, and that
    # run is a child too, seen only by a later statement.
    for rounds in range(_CHILD_ROUNDS):
        with prepared.cursor() as cursor:
            cursor.execute(_ACTIVE_CHILDREN.format(**t), [job_id])
            children = [row[0] for row in cursor.fetchall()]
        if not children:
            break
        if rounds == _CHILD_ROUNDS - 1:
            # Children that keep continuing as new faster than they can be cancelled:
            # each stops at its next continue-as-new, once this job's end commits.
            logger.warning(
                "children still running as their parent ends job=%s children=%s",
                locked[1],
                len(children),
            )
            break
        for child_id in children:
            ended += finish_tree(
                child_id,
                JobStatus.CANCELLED,
                error=children_error,
                data=children_data,
                children_error=children_error,
                children_data=children_data,
                wake_parent=False,  # the parent's own finish closes its steps
            )
    return ended + _finish_one(job_id, status, output, error, data, wake_parent)


def _finish_one(
    job_id: int,
    status: JobStatus,
    output: Any,
    error: dict[str, Any] | None,
    data: dict[str, Any] | None,
    wake_parent: bool,
) -> int:
    params: dict[str, Any] = {
        "id": job_id,
        "status": str(status),
        "sources": sources_of(status),
        "output": None if output is None else Jsonb(seal(output)),
        "error": None if error is None else Jsonb(seal(error)),
        "event": str(_FINAL_EVENTS[status]),
        "data": Jsonb(seal(data or error)) if (data or error) else None,
    }
    with prepared.cursor() as cursor:
        cursor.execute(_FINISH.format(done=DONE_CHANNEL, **tables()), params)
        row = cursor.fetchone()
    if row is None:
        return 0
    parent_id, parent_step, name, _ = row
    transaction.on_commit(
        functools.partial(signals.finished, job_id=job_id, name=name, status=status)
    )
    if wake_parent and parent_id is not None and parent_step is not None:
        _wake_parent(parent_id, parent_step, name, status, output, error)
    return 1


def child_outcome(
    status: str, output: Any, error: dict[str, Any] | None
) -> tuple[JobStatus, Any, dict[str, Any] | None]:
    """The parent's step as a child that ended in `status` leaves it: SUCCESSFUL with
    the child's output, or FAILED with its error (a cancelled child's, if it has
    none, says so)."""
    if status == JobStatus.SUCCESSFUL:
        return JobStatus.SUCCESSFUL, output, None
    if status == JobStatus.CANCELLED and error is None:
        error = {"type": "JobCancelled", "message": "The child workflow was cancelled."}
    return JobStatus.FAILED, None, error


def _wake_parent(
    parent_id: int,
    step: int,
    name: str,
    status: JobStatus,
    output: Any,
    error: dict[str, Any] | None,
) -> None:
    step_status, output, error = child_outcome(status, output, error)
    moved = Activity.objects.filter(job_id=parent_id, seq=step, status__in=ACTIVE_STATUSES).update(
        status=step_status, output=output, error=error, finished_at=Now()
    )
    if moved:
        Journal.objects.create(
            job_id=parent_id,
            step=step,
            event=JournalEvent.CHILD_FINISHED,
            name=name,
            data={"status": status},
        )
        enqueue_turn(parent_id)
