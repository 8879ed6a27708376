"""Run one claimed activity message and acknowledge its outcome.

User code runs after the claim has committed and before the ack begins, except for
`atomic=True` activities, whose own ORM writes share the ack's transaction so they
happen exactly once. Every ack is guarded by the message id, this worker's id, the
attempt and the RUNNING status: when the lease was lost (the message was rescued, or
its job finished or was cancelled) the ack moves nothing and the late result is
dropped, also when this worker has since claimed the message again.
"""

from __future__ import annotations

import datetime
import enum
import functools
import json
import logging
import threading
import time
import uuid
from functools import cache
from typing import Any

from django.db import InterfaceError, OperationalError, connection, connections, transaction
from django.db.models import F, Max
from django.db.models.functions import Greatest, Now
from psycopg import pq
from psycopg.types.json import Jsonb

from hotmesh_django import faults, metrics, middleware, registry, signals, tracing
from hotmesh_django.choices import ACTIVE_STATUSES, HELD, status_in
from hotmesh_django.definitions import RetryPolicy
from hotmesh_django.engine import prepared
from hotmesh_django.engine.acks import say_dropped
from hotmesh_django.engine.claim import Claimed, loads_jsonb
from hotmesh_django.engine.complete import enqueue_turn, error_dict, finish_job
from hotmesh_django.engine.conflicts import retry_on_conflict
from hotmesh_django.engine.notify import DONE_CHANNEL, SESSION_ENDED, WORK_CHANNEL, tables
from hotmesh_django.engine.sticky import ack_sticky
from hotmesh_django.engine.turn import (
    PARK_SECONDS,
    STALE,
    AckedStep,
    Local,
    continue_after_step,
    job_from_row,
    job_select,
    reread_job,
)
from hotmesh_django.exceptions import (
    CodecError,
    HotmeshError,
    NonRetryableError,
    UnknownDefinition,
)
from hotmesh_django.models import (
    Activity,
    Job,
    JobStatus,
    Journal,
    JournalEvent,
    Stream,
    StreamStatus,
)
from hotmesh_django.redaction import get_logger, redact
from hotmesh_django.serialization import (
    decode_call,
    decode_headers,
    encode_value,
    open_stored,
    seal,
    unseal,
)

logger = get_logger(__name__)

# The job rows an ack may finish (see choices.status_in).
_ACTIVE_X = status_in("x.status", *ACTIVE_STATUSES)


class Handoff(enum.Enum):
    """What run_step returns when the message is not finished when it returns."""

    # The success ack went to the worker's AckBatcher, which reports when it commits.
    ACK_PENDING = "ack pending"


class LeaseLost(HotmeshError):
    """The message is no longer this worker's: its result must be dropped."""


class ActivityTimeout(HotmeshError, TimeoutError):
    """An activity attempt ran past its timeout."""


class BadResult(NonRetryableError, TypeError):
    """The activity returned something that cannot be stored; retrying won't help."""


def loggable(data: Any, limit: int = 500) -> str:
    """Return stored JSON `data` as one log-friendly line: unsealed, secrets masked."""
    try:
        text = json.dumps(redact(unseal(data)), ensure_ascii=False, default=str)
    except CodecError as exc:
        text = f"<cannot unseal: {exc}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _debug_result(message: Claimed, output: Any) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "activity done job=%s step=%s name=%s result=%s",
            message.job_id,
            message.step,
            message.name,
            loggable(output),
        )


def _encode_result(result: Any) -> Any:
    try:
        return encode_value(result, what="the result")
    except (TypeError, ValueError) as exc:
        raise BadResult(str(exc)) from exc


def _step(message: Claimed) -> Any:
    return Activity.objects.filter(job_id=message.job_id, seq=message.step or 0)


def _mine(message: Claimed, worker_id: uuid.UUID) -> Any:
    """The message, if it is still held by this worker for this attempt (see HELD)."""
    return Stream.objects.filter(
        id=message.id,
        worker=worker_id,
        attempts=message.attempts,
        status=StreamStatus.RUNNING,
    )


# The whole success ack of an activity job in one statement (the W1 hot path): drop
# the message (guarded by worker and status), record the step, finish the job,
# journal both and wake result() waiters. Activity jobs have no parent and one step.
_ACK_TASK = """
WITH m AS (
    DELETE FROM {stream}
     WHERE id = %(id)s AND worker = %(worker)s AND attempts = %(attempts)s AND {held}
 RETURNING job_id
), a AS (
    UPDATE {activity} AS x
       SET status = 'SUCCESSFUL', output = %(output)s, error = NULL,
           attempts = %(attempts)s, finished_at = statement_timestamp()
      FROM m WHERE x.job_id = m.job_id AND x.seq = %(step)s
), j AS (
    UPDATE {job} AS x
       SET status = 'SUCCESSFUL', output = %(output)s, error = NULL,
           finished_at = statement_timestamp(), updated_at = statement_timestamp()
      FROM m WHERE x.id = m.job_id AND {job_active}
 RETURNING x.id, x.watched
), r AS (
    INSERT INTO {journal} (job_id, step, event, name, attempt, data, created_at)
    SELECT job_id, %(step)s::int, 'step_completed', %(name)s, %(attempts)s::int, NULL::jsonb,
           statement_timestamp()
      FROM m
    UNION ALL
    SELECT id, NULL, 'completed', '', NULL, NULL, statement_timestamp() FROM j
)
SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM j),
       (SELECT count(*) FROM (SELECT pg_notify('{done}', id::text) FROM j WHERE watched) AS n)
"""


# A workflow step's success in one statement: drop the message (guarded), record the
# step, journal it, say whether other steps of the job are still pending (the
# snapshot still shows this step RUNNING, hence `seq <> step`) and, when none are,
# lock the job (SKIP LOCKED: a worker mid-turn on it keeps it) and read it for the
# next turn, which then runs in this same transaction.
_ACK_STEP = """
WITH m AS (
    DELETE FROM {stream}
     WHERE id = %(id)s AND worker = %(worker)s AND attempts = %(attempts)s AND {held}
 RETURNING job_id
), a AS (
    UPDATE {activity} AS x
       SET status = 'SUCCESSFUL', output = %(output)s, error = NULL,
           attempts = %(attempts)s, finished_at = statement_timestamp()
      FROM m WHERE x.job_id = m.job_id AND x.seq = %(step)s
 RETURNING x.output, x.finished_at
), r AS (
    INSERT INTO {journal} (job_id, step, event, name, attempt, data, created_at)
    SELECT job_id, %(step)s, 'step_completed', %(name)s, %(attempts)s, NULL,
           statement_timestamp() FROM m
), b AS (
    SELECT EXISTS (SELECT 1 FROM {activity}
                    WHERE job_id = %(job)s AND seq <> %(step)s
                      AND kind IN ('ACTIVITY', 'CHILD')
                      AND status IN ('READY', 'RUNNING')) AS busy
)
SELECT (SELECT count(*) FROM m), b.busy, (SELECT output FROM a), (SELECT finished_at FROM a),
       {stale}, {job_select}
  FROM b LEFT JOIN LATERAL (
        SELECT *, x.xmin::text AS locked_version FROM {job} AS x
         WHERE x.id = %(job)s AND x.kind = 'WORKFLOW' AND NOT b.busy
           AND EXISTS (SELECT 1 FROM m)
           FOR NO KEY UPDATE SKIP LOCKED
       ) AS j ON true
"""


@cache
def _ack_step_sql() -> str:
    return _ACK_STEP.format(
        job_select=job_select("j"), stale=STALE.format(**tables()), held=HELD, **tables()
    )


@cache
def _ack_task_sql() -> str:
    return _ACK_TASK.format(done=DONE_CHANNEL, job_active=_ACTIVE_X, held=HELD, **tables())


def _ack_params(message: Claimed, worker_id: uuid.UUID, output: Any) -> dict[str, Any]:
    return {
        "id": message.id,
        "worker": worker_id,
        "output": Jsonb(seal(output)),
        "attempts": message.attempts,
        "step": message.step,
        "name": message.name,
        "job": message.job_id,
    }


def _ack_task(message: Claimed, worker_id: uuid.UUID, output: Any) -> bool:
    params = _ack_params(message, worker_id, output)
    with prepared.cursor() as cursor:
        faults.point("ack_send")
        cursor.execute(_ack_task_sql(), params)
        row = cursor.fetchone()
    if row and row[1]:
        # On commit: an atomic step's ack shares its body's transaction.
        transaction.on_commit(
            functools.partial(
                signals.finished, job_id=message.job_id, name=message.name, status="SUCCESSFUL"
            )
        )
    return bool(row and row[0])


def ack_success(message: Claimed, local: Local, output: Any) -> tuple[bool, Claimed | None]:
    """Record a successful attempt and, for a workflow step, run the next turn.

    Return (acked, next message this worker claimed). acked is False if the lease
    was lost.
    """
    worker_id = local.worker_id
    if message.kind == "TASK":
        return _ack_task(message, worker_id, output), None
    # Sealed once: seal() keeps a sealed value as it is, so the usual path below
    # stores this same token when the sticky one does not apply.
    output = seal(output)
    if message.cache is not None:
        done = ack_sticky(message, local, output)
        if done is not None:
            return done
    with transaction.atomic():
        with prepared.cursor() as cursor:
            faults.point("ack_send")
            cursor.execute(_ack_step_sql(), _ack_params(message, worker_id, output))
            row = cursor.fetchone()
        if not row or not row[0]:
            return False, None
        job = job_from_row(row[5:])
        if job is not None and row[4]:
            # Locked after a turn that committed since this statement's snapshot
            # (see STALE): the steps are read again, this ack's write among them.
            job = reread_job(job.id)
        elif job is not None:
            # The job's steps were read in the ack's snapshot, where this step is
            # still RUNNING: the turn takes its new state from what the ack wrote
            # (as stored, so the replay sees the value the next one will).
            job.acked_step = AckedStep(  # type: ignore[attr-defined]
                seq=message.step or 0,
                output=open_stored(loads_jsonb(row[2])),
                attempts=message.attempts,
                finished_at=row[3],
            )
        following = continue_after_step(message.job_id, local, busy=row[1], job=job)
    return True, following


def ack_retry(message: Claimed, worker_id: uuid.UUID, error: dict[str, Any], delay: float) -> bool:
    """Record a failed attempt and schedule the next one `delay` seconds from now."""
    with transaction.atomic():
        moved = _mine(message, worker_id).update(
            status=StreamStatus.SCHEDULED,
            worker=None,
            lease_expires_at=None,
            visible_at=Now() + datetime.timedelta(seconds=delay),
        )
        if not moved:
            return False
        _step(message).update(
            status=JobStatus.READY,
            error=error,
            attempts=message.attempts,
        )
        if message.kind == "TASK":
            Job.objects.filter(pk=message.job_id).transition(JobStatus.READY)
        Journal.objects.create(
            job_id=message.job_id,
            step=message.step,
            event=JournalEvent.STEP_RETRIED,
            name=message.name,
            attempt=message.attempts,
            data={"error": error, "delay": delay},
        )
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [WORK_CHANNEL, f"t:{time.time() + delay}"])
    return True


def ack_failure(message: Claimed, worker_id: uuid.UUID, error: dict[str, Any]) -> bool:
    """Record the final failure of a step (its workflow sees ActivityFailed)."""
    with transaction.atomic():
        if not _mine(message, worker_id).delete()[0]:
            return False
        _step(message).update(
            status=JobStatus.FAILED,
            error=error,
            attempts=message.attempts,
            finished_at=Now(),
        )
        Journal.objects.create(
            job_id=message.job_id,
            step=message.step,
            event=JournalEvent.STEP_FAILED,
            name=message.name,
            attempt=message.attempts,
            data={"error": error},
        )
        if message.kind == "TASK":
            finish_job(message.job_id, JobStatus.FAILED, error=error)
        else:
            enqueue_turn(message.job_id)
    return True


def _timed_out(timeout: float) -> ActivityTimeout:
    return ActivityTimeout(f"The activity ran longer than its timeout of {timeout} s.")


def _call_with_timeout(func: Any, args: list[Any], kwargs: dict[str, Any], timeout: float) -> Any:
    """Run `func` in a helper thread and give up waiting after `timeout` seconds.

    Python cannot kill a thread: a timed-out call keeps running in the background,
    but its slot is freed and, since the attempt is acked as failed, whatever it
    returns later is dropped by the guarded ack.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = func(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            box["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=target, name="hotmesh-activity", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise _timed_out(timeout)
    if "error" in box:
        raise box["error"]
    return box.get("result")


def run_step(message: Claimed, local: Local) -> Claimed | Handoff | None:
    """Run the activity of a STEP or TASK message and ack its outcome.

    Return the next step this worker claimed while acking, to run next, or
    Handoff.ACK_PENDING when the ack was handed to `local.acks`.
    """
    worker_id = local.worker_id
    try:
        definition = registry.get_activity(message.name)
    except UnknownDefinition as exc:
        logger.error(
            "unknown activity job=%s step=%s name=%s", message.job_id, message.step, message.name
        )
        ack_failure(message, worker_id, error_dict(exc, with_traceback=False))
        return None
    policy = definition.retry
    if message.attempts > policy.max_attempts:
        ack_failure(
            message,
            worker_id,
            {
                "type": "AttemptsExhausted",
                "message": f"Attempt {message.attempts} exceeds max_attempts="
                f"{policy.max_attempts}: earlier attempts' workers stopped "
                "before finishing.",
            },
        )
        return None
    try:
        args, kwargs = decode_call(message.payload)
        headers = decode_headers(message.payload)
    except CodecError as exc:
        _wait_for_codec(message, worker_id, exc)
        return None
    except (ValueError, TypeError) as exc:
        ack_failure(message, worker_id, error_dict(exc, with_traceback=False))
        return None
    # definition.func itself unless HOTMESH_MIDDLEWARE or the job's headers need a
    # wrapper: the no-middleware hot path pays one cached lookup.
    func = middleware.activity_runner(
        definition.func,
        name=message.name,
        job_id=message.job_id,
        step=message.step,
        attempt=message.attempts,
        queue=message.queue,
        headers=headers,
    )

    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "activity start job=%s step=%s name=%s attempt=%s args=%s",
            message.job_id,
            message.step,
            message.name,
            message.attempts,
            loggable(message.payload),
        )
    started = time.monotonic()
    with tracing.span(
        "hotmesh.step",
        job_id=message.job_id,
        step=message.step,
        name=message.name,
        attempt=message.attempts,
        queue=message.queue,
    ):
        following, outcome = _execute(definition, func, message, local, args, kwargs)
    if outcome is not None:
        metrics.observe_step(message.name, message.queue, time.monotonic() - started, outcome)
    return following


def _execute(
    definition: Any,
    func: Any,
    message: Claimed,
    local: Local,
    args: list[Any],
    kwargs: dict[str, Any],
) -> tuple[Claimed | Handoff | None, str | None]:
    """Call `func` (the activity, perhaps wrapped in middleware) and ack; return
    (next message, metrics outcome or None)."""
    faults.point("step_start")
    # The session an atomic step starts on: its block, whose rollback fails on a dead
    # session, opens a new one on its way out, and only this tells them apart. Not
    # for other steps (a dead session stays BAD there): a runner whose acks go to
    # the batcher would open a connection of its own for nothing.
    session = _backend_pid() if definition.atomic else None
    try:
        if definition.atomic:
            with transaction.atomic():
                # Its writes share this transaction, so it cannot run in a helper
                # thread (another connection) as a timed call does: it runs here, and
                # an attempt that overran its timeout is failed and its writes rolled
                # back, just as a timed call's late result is dropped.
                began = time.monotonic()
                result = func(*args, **kwargs)
                timeout = definition.timeout
                if timeout is not None and time.monotonic() - began > timeout:
                    raise _timed_out(timeout)
                output = _encode_result(result)
                _debug_result(message, output)
                faults.point("step_done")
                acked, following = ack_success(message, local, output)
                if not acked:
                    raise LeaseLost  # rolls back the activity's own writes too
            faults.point("ack_commit")
            return following, metrics.SUCCESSFUL
        if definition.timeout is not None:
            result = _call_with_timeout(func, args, kwargs, definition.timeout)
        else:
            result = func(*args, **kwargs)
        output = _encode_result(result)
        _debug_result(message, output)
        faults.point("step_done")
    except LeaseLost:
        say_dropped([message])
        return None, None
    except (OperationalError, InterfaceError) as exc:
        if session_lost(exc, session):
            # The worker's connection died under the activity: an infrastructure
            # fault, not the activity's, so it must not use up the retry budget.
            return None, _release_uncounted(message, local.worker_id, exc)
        return None, _record_failure(message, local.worker_id, definition.retry, exc)
    except (Exception, SystemExit, KeyboardInterrupt) as exc:
        # SystemExit and KeyboardInterrupt here come from user code: the worker's own
        # signals are handled by flags, never by raising into the activity.
        return None, _record_failure(message, local.worker_id, definition.retry, exc)
    if message.kind == "TASK" and local.acks is not None:
        # An activity job's ack ends it and starts nothing: group it with others.
        local.acks.submit(message, output)
        return Handoff.ACK_PENDING, metrics.SUCCESSFUL
    acked, following = retry_on_conflict(
        functools.partial(ack_success, message, local, output), what="step ack"
    )
    faults.point("ack_commit", acked)
    if not acked:
        say_dropped([message])
        return None, None
    return following, metrics.SUCCESSFUL


def _backend_pid() -> int | None:
    """This thread's server session (opened now if need be), or None if there is none."""
    try:
        connection.ensure_connection()
    except (OperationalError, InterfaceError):
        return None
    raw = connection.connection
    return None if raw is None else raw.info.backend_pid


def session_lost(exc: BaseException, session: int | None = None) -> bool:
    """True when `exc` means this thread's database session died (then reset it);
    `session`: the backend pid it had when the work began.

    An activity's own error may carry a "session ended" SQLSTATE too: one from another
    alias or a connection of its own (a replica in recovery, a query a watchdog
    killed). That is the activity's failure, to be counted and retried with backoff,
    so such a code is believed only once this thread's session fails to answer.
    """
    state = getattr(exc.__cause__, "sqlstate", None) or ""
    raw = connection.connection
    broken = (
        # None: closed by the atomic block the error left (its rollback failed on
        # the dead session), as for a turn, an ack or an atomic activity.
        raw is None
        or bool(getattr(raw, "broken", False))
        or bool(raw.closed)
        # A session whose termination an earlier statement already read: psycopg
        # then raises "the connection is lost" with no SQLSTATE.
        or raw.pgconn.status == pq.ConnStatus.BAD
    )
    if not broken and session is not None and raw is not None:
        broken = raw.info.backend_pid != session  # replaced since `session` began
    if not broken and state.startswith(SESSION_ENDED):
        broken = not _session_answers()
    if broken:
        connection.close()
    return broken


def _session_answers() -> bool:
    """Ask the server over this thread's connection (opening one if it has none)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except (OperationalError, InterfaceError):
        return False
    return True


_RELEASE = """
WITH m AS (
    UPDATE {stream} AS s
       SET status = 'READY', worker = NULL, lease_expires_at = NULL,
           attempts = greatest(s.attempts - 1, 0)
     WHERE id = %(id)s AND worker = %(worker)s AND attempts = %(attempts)s AND {held}
 RETURNING job_id, step, name, queue
), a AS (
    UPDATE {activity} AS x SET status = 'READY'
      FROM m WHERE x.job_id = m.job_id AND x.seq = m.step AND x.status = 'RUNNING'
), r AS (
    INSERT INTO {journal} (job_id, step, event, name, attempt, data, created_at)
    SELECT job_id, step, 'lease_expired', name, %(attempt)s, %(data)s, statement_timestamp() FROM m
)
SELECT pg_notify('{channel}', 'q:' || queue) FROM m
"""


def release_after_loss(message: Claimed, worker_id: uuid.UUID, exc: BaseException) -> None:
    """Give back at once a message whose session died under it, on a new connection,
    instead of leaving it RUNNING until its lease expires.

    A turn or timer is dropped and the job's next turn queued (a turn is idempotent),
    as the lease rescue does; a step goes back to READY without counting the attempt.
    If this fails too, the lease expires and the rescue does it.
    """
    connection.close()
    if message.kind in ("TURN", "TIMER"):
        with transaction.atomic():
            if _mine(message, worker_id).delete()[0]:
                enqueue_turn(message.job_id)
        logger.warning("connection lost mid-turn, turn queued again job=%s", message.job_id)
    else:
        _release_uncounted(message, worker_id, exc)


# Releases of one attempt for a lost session before the loss counts as the attempt's
# failure: an activity that ends its own session (a watchdog kills its query on the
# default alias every time) would otherwise run again at once, for ever.
UNCOUNTED_LOSSES = 3


def _release_uncounted(message: Claimed, worker_id: uuid.UUID, exc: BaseException) -> str | None:
    """Give the message back at once without counting the attempt (on a new
    connection). If this fails too, the lease expires and the rescue counts it.

    After UNCOUNTED_LOSSES releases of the same attempt the loss is counted instead,
    retried with the activity's backoff until its max_attempts: then return the
    metrics outcome, else None."""
    if _losses(message) >= UNCOUNTED_LOSSES:
        logger.warning(
            "step lost its database session %s times in a row, counted as a failed "
            "attempt job=%s step=%s",
            UNCOUNTED_LOSSES + 1,
            message.job_id,
            message.step,
        )
        try:
            policy = registry.get_activity(message.name).retry
        except UnknownDefinition:
            policy = RetryPolicy()
        return _record_failure(message, worker_id, policy, exc)
    params: dict[str, Any] = {
        "id": message.id,
        "worker": worker_id,
        "attempt": message.attempts,
        "attempts": message.attempts,
        # The database's message may quote a value, so it is sealed like one.
        "data": Jsonb(seal({"reason": "database connection lost", "error": str(exc)[:500]})),
    }
    logger.warning("connection lost mid-step job=%s step=%s", message.job_id, message.step)
    with connection.cursor() as cursor:
        cursor.execute(_RELEASE.format(channel=WORK_CHANNEL, held=HELD, **tables()), params)
    return None


def _losses(message: Claimed) -> int:
    """How often this attempt of the step was given back for a lost session (each such
    release keeps the attempt's number and journals `lease_expired` under it), since
    an operator last retried the job (which starts the attempts again)."""
    journal = Journal.objects.filter(job_id=message.job_id)
    retried = journal.filter(event=JournalEvent.RETRIED).aggregate(last=Max("id"))["last"]
    return journal.filter(
        id__gt=retried or 0,
        step=message.step,
        event=JournalEvent.LEASE_EXPIRED,
        attempt=message.attempts,
    ).count()


def _wait_for_codec(message: Claimed, worker_id: uuid.UUID, error: CodecError) -> None:
    """Give back a step whose arguments this process cannot unseal, to be tried again
    in PARK_SECONDS, without counting the attempt: a wrong key is the deployment's
    fault, not the activity's, and failing the step would lose it for good."""
    logger.error(
        "cannot unseal stored values, step put aside job=%s step=%s retry_in=%s error=%s "
        "(check HOTMESH_CODEC and HOTMESH_CODEC_KEYS)",
        message.job_id,
        message.step,
        PARK_SECONDS,
        error,
    )
    with transaction.atomic():
        moved = _mine(message, worker_id).update(
            status=StreamStatus.SCHEDULED,
            worker=None,
            lease_expires_at=None,
            visible_at=Now() + datetime.timedelta(seconds=PARK_SECONDS),
            attempts=Greatest(F("attempts") - 1, 0),
        )
        if moved:
            _step(message).filter(status=JobStatus.RUNNING).update(
                status=JobStatus.READY, attempts=Greatest(F("attempts") - 1, 0)
            )
            if message.kind == "TASK":
                Job.objects.filter(pk=message.job_id).transition(JobStatus.READY)
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_notify(%s, %s)",
                    [WORK_CHANNEL, f"t:{time.time() + PARK_SECONDS}"],
                )


def _record_failure(
    message: Claimed, worker_id: uuid.UUID, policy: Any, exc: BaseException
) -> str | None:
    """Ack a failed attempt as retried or failed; return the metrics outcome."""
    error = error_dict(exc)
    retryable = policy.is_retryable(exc) and not isinstance(exc, BadResult)
    delay = policy.delay_after(message.attempts) if retryable else None
    logger.info(
        "activity failed job=%s step=%s name=%s attempt=%s error=%s retry_in=%s",
        message.job_id,
        message.step,
        message.name,
        message.attempts,
        error["type"],
        delay,
    )
    if delay is None:
        acked = ack_failure(message, worker_id, error)
    else:
        acked = ack_retry(message, worker_id, error, delay)
    if not acked:
        logger.warning("lease lost, failure dropped job=%s step=%s", message.job_id, message.step)
        return None
    return metrics.FAILED if delay is None else metrics.RETRIED
