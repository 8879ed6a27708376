"""A workflow turn: replay the workflow function and write what it asked for.

The whole turn is one transaction: drop the claimed message, lock the job, replay,
record new steps, queue their messages and set the job's status. A crash anywhere
rolls all of it back; the message's lease then expires and another worker replays
the same turn. `FOR NO KEY UPDATE` on the job serialises turns of one job without
blocking the key-share locks that inserting its steps' messages takes.
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from functools import cache
from typing import TYPE_CHECKING, Any

from django.db import connection, transaction
from django.db.models import DateTimeField
from django.db.models.functions import Now

from hotmesh_django import middleware, registry, signals
from hotmesh_django.choices import HELD
from hotmesh_django.context import WorkflowContext, activate
from hotmesh_django.engine import human, prepared
from hotmesh_django.engine.children import start_children
from hotmesh_django.engine.claim import Claimed
from hotmesh_django.engine.complete import (
    enqueue_turn,
    error_dict,
    finish_job,
    job_timer,
    job_timers,
    timer_message,
)
from hotmesh_django.engine.notify import WORK_CHANNEL, tables
from hotmesh_django.engine.rows import StatusMove, StepAck, Written, write_turn
from hotmesh_django.engine.sticky import TurnCache, turn_from_claim
from hotmesh_django.exceptions import (
    CodecError,
    ContinueAsNew,
    JobFinishedError,
    JobNotFound,
    NonDeterminismError,
    NotAWorkflow,
    Suspend,
    UnknownDefinition,
)
from hotmesh_django.models import (
    FINISHED_STATUSES,
    Activity,
    Job,
    JobKind,
    JobStatus,
    Journal,
    JournalEvent,
    SealedJSONField,
    Signal,
    StepKind,
    Stream,
    StreamKind,
    StreamStatus,
    sources_of,
)
from hotmesh_django.redaction import get_logger
from hotmesh_django.serialization import (
    Undecodable,
    decode_call,
    decode_headers,
    encode_value,
    loads_stored,
    open_stored,
    readable,
)

if TYPE_CHECKING:
    from hotmesh_django.engine.acks import AckBatcher

logger = get_logger(__name__)

# How long a job whose workflow code this worker lacks waits before another look.
PARK_SECONDS = 30.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Local:
    """What this worker can run itself, so a turn may hand it the next step at once."""

    worker_id: uuid.UUID
    queues: frozenset[str] | None  # None: every queue
    lease_seconds: float
    # Limited queues: their claims must go through the limiter.
    excluded: frozenset[str] = frozenset()
    # Where activity jobs' success acks go to be written in batches (None: inline).
    acks: AckBatcher | None = None
    # Live views of the worker, read at each hand-off: a snapshot taken when a chain
    # of steps began would keep it going after a pause or a SIGTERM.
    stopping: threading.Event | None = None
    paused: Callable[[], AbstractSet[str]] = frozenset

    def is_stopping(self) -> bool:
        return self.stopping is not None and self.stopping.is_set()

    def serves(self, queue: str) -> bool:
        if self.is_stopping():
            return False  # a stopping worker takes nothing more on itself
        return (
            (self.queues is None or queue in self.queues)
            and queue not in self.excluded
            and queue not in self.paused()
        )


def run_turn(message: Claimed, local: Local) -> Claimed | None:
    """Run one turn of the job in `message`; drop it if the lease was lost.

    Return a step message this worker claimed for itself in the same transaction,
    to run next on the same thread (None if there is none).
    """
    taken = turn_from_claim(message, local)
    if taken is not None:
        return taken.following
    params: dict[str, Any] = {
        "job": message.job_id,
        "id": message.id,
        "worker": local.worker_id,
        "attempts": message.attempts,
    }
    with transaction.atomic():
        with prepared.cursor() as cursor:
            cursor.execute(_take_turn_sql(), params)
            row = cursor.fetchone()
        if not row or not row[0]:
            _dropped(message, job_from_row(row[2:]) if row else None)
            return None
        job = job_from_row(row[2:])
        if job is None:
            return None
        if row[1]:
            job = reread_job(job.id)
        return _turn(job, local)


def _dropped(message: Claimed, job: Job | None) -> None:
    """Say why a claimed turn found its message gone."""
    if job is not None and job.status in FINISHED_STATUSES:
        # A turn before it finished the job (several signals at once queue several
        # turns, and the first one may take them all) or a cancel came first: the job
        # ending dropped this queued turn, and nothing was lost.
        logger.debug("turn dropped, job already %s job=%s", job.status, message.job_id)
        return
    logger.warning("lease lost, turn dropped job=%s", message.job_id)


# Lock the job, then drop the turn's message (guarded by worker and status), and read
# the job for the replay: one round trip. The job first, the message second (the
# DELETE's condition reads `j`, so the lock is taken before any message row is): the
# order finish_job and cancel take them in, so the two never deadlock.
#
# The second column says whether the steps read here are stale. Under READ COMMITTED
# a statement that waits for a row lock gets the newest version of that row, but it
# reads every other row (the steps) in the snapshot it took before waiting: a turn
# that queued behind another one would replay without the steps that one recorded
# and undo its status move. Every turn that writes touches the job row, so a locked
# version other than the snapshot's (`STALE`) means: read the steps again.
_TAKE_TURN = """
WITH j AS MATERIALIZED (
    SELECT *, xmin::text AS locked_version FROM {job}
     WHERE id = %(job)s AND kind = 'WORKFLOW' FOR NO KEY UPDATE
), m AS (
    DELETE FROM {stream}
     WHERE id = %(id)s AND worker = %(worker)s AND attempts = %(attempts)s AND {held}
       AND (SELECT count(*) FROM j) >= 0
 RETURNING id
)
SELECT (SELECT count(*) FROM m), {stale}, {job_select}
  FROM (SELECT 1) AS one LEFT JOIN j ON true
"""

# Whether the locked job row `j` is newer than this statement's snapshot of it.
STALE = "(j.locked_version IS DISTINCT FROM (SELECT xmin::text FROM {job} WHERE id = j.id))"


@cache
def _take_turn_sql() -> str:
    return _TAKE_TURN.format(
        job_select=job_select("j"), stale=STALE.format(**tables()), held=HELD, **tables()
    )


def reread_job(job_id: int) -> Job:
    """Read the job this transaction has locked, and its steps, in a fresh snapshot."""
    sql = f"SELECT {job_select('j')} FROM {tables()['job']} AS j WHERE j.id = %s"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, [job_id])
        row = cursor.fetchone()
    job = job_from_row(row) if row else None
    if job is None:  # we hold its lock, so it cannot have gone
        raise RuntimeError(f"Job {job_id} vanished under its own row lock.")
    return job


_JOB_FIELDS = list(Job._meta.concrete_fields)


@cache
def job_select(alias: str = "j") -> str:
    """The select list that reads a job row (as `alias`) for a turn: its columns,
    the statement's clock and its steps as JSON text, in one round trip.

    Written by hand and built once: compiling the equivalent queryset on every turn
    cost more Python time than the rest of the turn's bookkeeping together.
    """
    quote = connection.ops.quote_name
    columns = ", ".join(f"{alias}.{quote(str(f.column))}" for f in _JOB_FIELDS)
    steps = (
        f"(SELECT json_agg(a)::text FROM {tables()['activity']} AS a"  # noqa: S608
        f" WHERE a.job_id = {alias}.id)"
    )
    # The clock only where there is a job: a claim reads this list for every message
    # it takes, and loading a timestamp it never uses cost a batch of activity jobs
    # measurable worker time.
    now = f"CASE WHEN {alias}.id IS NOT NULL THEN statement_timestamp() END"
    return f"{columns}, {now}, {steps}"


@cache
def _job_converters() -> tuple[Any, dict[int, Any]]:
    compiler = Job.objects.all().query.get_compiler("default")
    table = Job._meta.db_table
    return compiler, compiler.get_converters([f.get_col(table) for f in _JOB_FIELDS])


def job_from_row(row: Sequence[Any]) -> Job | None:
    """The Job that `job_select()` read, as the ORM would have loaded it, with
    `db_now` and `steps_json` set; None when the row is empty (nothing was locked)."""
    n = len(_JOB_FIELDS)
    if row[0] is None:
        return None
    compiler, converters = _job_converters()
    values = next(iter(compiler.apply_converters([list(row[:n])], converters)))
    job = Job.from_db("default", [f.attname for f in _JOB_FIELDS], values)
    job.db_now, job.steps_json = row[n], row[n + 1]  # type: ignore[attr-defined]
    return job


def steps_of(job: Job) -> dict[int, Activity]:
    """The job's steps by number, built from the JSON `job_select()` read with the job."""
    rows = loads_stored(job.steps_json or "[]")  # type: ignore[attr-defined]
    if isinstance(rows, Undecodable):
        raise ValueError(f"The job's steps hold {rows!r}.")
    fields = _STEP_FIELDS
    steps = {}
    for row in rows:
        values = [_step_value(f, row[f.column]) for f in fields]
        step = Activity.from_db("default", [f.attname for f in fields], values)
        steps[step.seq] = step
    return steps


_STEP_FIELDS = list(Activity._meta.concrete_fields)


def _step_value(field: Any, value: Any) -> Any:
    """A column of a step row read as JSON, as the ORM would have loaded it."""
    if value is None:
        return None
    if isinstance(field, DateTimeField):
        return datetime.datetime.fromisoformat(value)
    if isinstance(field, SealedJSONField):
        return open_stored(value)  # through HOTMESH_CODEC, as from_db_value does
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class AckedStep:
    """The step whose success ack read the job: its row in `steps_json` predates it."""

    seq: int
    output: Any
    attempts: int
    finished_at: datetime.datetime | None


def continue_after_step(
    job_id: int, local: Local, *, busy: bool, job: Job | None
) -> Claimed | None:
    """Inside a step's ack: run the job's next turn now instead of queueing it.

    The step's outcome, the replay and the next step's message then commit in one
    transaction. When another worker holds the job (it is mid-turn) or this worker
    lacks the workflow's code, queue the turn as usual. So too while other steps of
    the job are still pending: a fan-out then replays once per batch of completions
    (queued turns collapse into one), not once per completion.
    """
    # `job` is the locked row the ack read, None when it is busy or another worker
    # holds it.
    if busy:
        enqueue_turn(job_id)
        return None
    if job is None or not registry.has_workflow(job.name) or not local.serves(job.queue):
        enqueue_turn(job_id)
        return None
    return _turn(job, local)


def _turn(job: Job, local: Local) -> Claimed | None:
    """Replay the locked `job` and write what it asked for."""
    if job.status in FINISHED_STATUSES or job.kind != JobKind.WORKFLOW:
        return None
    db_now = job.db_now  # type: ignore[attr-defined]
    if job.deadline_at is not None and job.deadline_at <= db_now:
        finish_job(
            job.id,
            JobStatus.FAILED,
            error={
                "type": "WorkflowTimeout",
                "message": f"The workflow passed its deadline {job.deadline_at}.",
            },
        )
        return None
    try:
        definition = registry.get_workflow(job.name)
    except UnknownDefinition as exc:
        _park(job, str(exc))
        return None
    try:
        steps = steps_of(job)
        acked: AckedStep | None = getattr(job, "acked_step", None)
        if acked is not None and acked.seq in steps:
            step = steps[acked.seq]
            step.status, step.output, step.error = JobStatus.SUCCESSFUL, acked.output, None
            step.attempts, step.finished_at = acked.attempts, acked.finished_at
        args, kwargs = decode_call(job.input)
        headers = decode_headers(job.input)
        check_readable(job, steps.values())
    except CodecError as exc:
        _wait_for_codec(job, exc)
        return None
    except ValueError as exc:
        finish_job(job.id, JobStatus.FAILED, error=error_dict(exc, with_traceback=False))
        return None
    missing = missing_steps(steps)
    if missing:
        # Replaying past a hole would run a finished step a second time.
        hole = NonDeterminismError(
            f"The job's history has no row for step(s) {', '.join(map(str, missing))} "
            "(deleted by hand?); replaying would run finished steps again."
        )
        finish_job(job.id, JobStatus.FAILED, error=error_dict(hole, with_traceback=False))
        return None
    ctx = workflow_context(job, steps, db_now, headers, draws=take_draws(job.id))
    func = workflow_func(definition, job, headers)
    result, error, returned = replay(ctx, func, args, kwargs)
    if ctx.codec_error is not None:  # nothing is written yet
        _wait_for_codec(job, ctx.codec_error)
        return None
    suspending = error is None and not returned and ctx.continued is None
    # The job's own status move rides in the turn's write statement when it can.
    move = status_move(job, ctx) if suspending else None
    following, _ = write(ctx, local, move)
    if error is not None or returned:
        fields = _job_fields(job, ctx)  # _suspend writes them otherwise
        if fields:
            Job.objects.filter(pk=job.pk).update(**fields)
    if ctx.continued is not None and error is None:
        _continue_as_new(job, ctx.continued, definition.timeout)
        return None
    if error is not None:
        logger.info("workflow failed job=%s error=%s", job.workflow_id, type(error).__name__)
        finish_job(job.id, JobStatus.FAILED, error=error_dict(error))
        return None
    if returned:
        try:
            output = encode_value(result, what="the workflow's result")
        except (TypeError, ValueError) as exc:
            finish_job(job.id, JobStatus.FAILED, error=error_dict(exc, with_traceback=False))
        else:
            finish_job(job.id, JobStatus.SUCCESSFUL, output=output)
        return None
    if move is None:
        _suspend(job, ctx)
    return following


def workflow_context(
    job: Job,
    steps: dict[int, Activity],
    db_now: datetime.datetime,
    headers: Any,
    *,
    draws: dict[int, tuple[str, Any]] | None = None,
) -> WorkflowContext:
    """The context a replay of `job` from `steps` runs in, on the clock `db_now`."""
    return WorkflowContext(
        job=job,
        steps=steps,
        # Read only when the workflow waits for a signal.
        signals=lambda: list(Signal.objects.filter(job=job, step__isnull=True).order_by("id")),
        db_now=db_now,
        headers=headers,
        draws=draws,
    )


# What a replay that wrote nothing drew from hm.now(), hm.uuid4() and hm.random(), by
# step: the sticky path replays a turn first and leaves what it cannot write in one
# statement to the usual path, which replays again in the same thread. Drawing anew
# there would give the code values its first run never saw, and logged.
_draws = threading.local()


def carry_draws(ctx: WorkflowContext) -> None:
    """Keep the values `ctx`'s replay drew, for this thread's next replay of its job."""
    _draws.held = (ctx.job.id, ctx.drawn())


def forget_draws() -> None:
    """Drop what carry_draws kept: called before each message, so values carried for
    a replay that never came (its ack found the lease lost, its job busy) cannot
    reach a later turn of the job."""
    _draws.held = None


def take_draws(job_id: int) -> dict[int, tuple[str, Any]]:
    """The values carried for `job_id` (and forget them, whatever the job)."""
    held = getattr(_draws, "held", None)
    _draws.held = None
    return held[1] if held is not None and held[0] == job_id else {}


def workflow_func(definition: Any, job: Job, headers: Any) -> Any:
    """The workflow function of `job`, through the execute_workflow middleware."""
    return middleware.workflow_runner(
        definition.func,
        name=job.name,
        workflow_id=job.workflow_id,
        queue=job.queue,
        headers=headers,
    )


def missing_steps(steps: dict[int, Activity]) -> list[int]:
    """Return the step numbers below the highest one that have no row (seq is dense)."""
    if not steps or len(steps) == max(steps):
        return []
    return [seq for seq in range(1, max(steps)) if seq not in steps][:20]


def replay(
    ctx: WorkflowContext, func: Any, args: list[Any], kwargs: dict[str, Any]
) -> tuple[Any, BaseException | None, bool]:
    """Run the workflow function; return (result, error, returned)."""
    result: Any = None
    error: BaseException | None = None
    returned = False
    with activate(ctx):
        try:
            result = func(*args, **kwargs)
            returned = True
        except (Suspend, ContinueAsNew):
            pass
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            error = exc
    # Checked after the call, so a user's broad `except` cannot hide either.
    if ctx.nondeterminism is not None:
        return None, ctx.nondeterminism, False
    if ctx.continued is not None and error is None:
        return None, None, False
    if returned and ctx.suspended:
        return None, None, False
    return result, error, returned


def _suspended_status(ctx: WorkflowContext) -> JobStatus:
    pending_work = any(
        step.kind == StepKind.ACTIVITY and step.status in (JobStatus.READY, JobStatus.RUNNING)
        for step in ctx.steps.values()
    )
    return JobStatus.RUNNING if pending_work else JobStatus.WAITING


def status_move(job: Job, ctx: WorkflowContext) -> StatusMove | None:
    """The suspending job's status move as write_turn can make it, or None when there
    is more to write than status, first start and a cleared error (then _suspend)."""
    if ctx.search or ctx.state:
        return None
    status = _suspended_status(ctx)
    return StatusMove(
        status=status,
        sources=tuple(sources_of(status)),
        start=job.started_at is None,
        clear_error=job.error is not None,
    )


def _suspend(job: Job, ctx: WorkflowContext) -> None:
    status = _suspended_status(ctx)
    fields = _job_fields(job, ctx)
    if job.error is not None:
        fields["error"] = None  # a parked job whose code came back
    if status != job.status:
        Job.objects.filter(pk=job.pk).transition(status, **fields)
    elif fields:
        # Same status (we hold the row lock): only the fields change.
        Job.objects.filter(pk=job.pk).update(updated_at=Now(), **fields)


def _job_fields(job: Job, ctx: WorkflowContext) -> dict[str, Any]:
    """Return the first-start stamp and merged search attributes to write."""
    fields: dict[str, Any] = {}
    if job.started_at is None:
        fields["started_at"] = Now()
    if ctx.search:
        fields["search"] = {**job.search, **ctx.search}
    if ctx.state:
        fields["state"] = {**job.state, **ctx.state}
    return fields


def write(
    ctx: WorkflowContext,
    local: Local,
    move: StatusMove | None = None,
    *,
    ack: StepAck | None = None,
    entries: Sequence[Journal] = (),
) -> tuple[Claimed | None, Written]:
    """Write the steps, messages and journal entries the turn produced.

    The first new step this worker can run is written already claimed by it (RUNNING,
    leased, attempt 1) and returned, so the worker runs it next without a round trip
    through the queue; its lease protects it like any claim. When `move` is the
    job's whole row change, the returned message carries a TurnCache for its ack
    (engine/sticky.py). `ack` and `entries`: a step's success written in the same
    statement (the caller put the step in ctx.changed_steps).
    """
    job = ctx.job
    whole_move = move  # with no move, _suspend writes more of the job's row after this
    journal: list[Journal] = list(entries)
    if job.started_at is None:
        journal.append(Journal(job=job, event=JournalEvent.STARTED, name=job.name))
    messages: list[Stream] = []
    mine = _take_one(ctx, local)
    mine_message: Stream | None = None
    for step in ctx.changed_steps:
        if step.kind == StepKind.SLEEP:
            journal.append(
                Journal(job=job, step=step.seq, event=JournalEvent.TIMER_FIRED, name=step.name)
            )
        elif step.kind == StepKind.SIGNAL and step.status == JobStatus.FAILED:
            journal.append(
                Journal(job=job, step=step.seq, event=JournalEvent.SIGNAL_TIMED_OUT, name=step.name)
            )
    for step, definition in ctx.new_activity_calls:
        priority = (
            definition.priority
            if definition.options.priority is None
            else (definition.options.priority)
        )
        message = Stream(
            queue=step.queue,
            kind=StreamKind.STEP,
            concurrency_key=job.concurrency_key,
            job=job,
            step=step.seq,
            name=step.name,
            payload=step.input,
            priority=priority,
            status=StreamStatus.READY,
        )
        delay = definition.options.delay_seconds()
        if delay > 0:  # .using(delay=) or run_at=: promoted when due, like a retry
            message.status = StreamStatus.SCHEDULED
            message.visible_at = ctx.db_now + datetime.timedelta(seconds=delay)
        elif step is mine:
            # Written already claimed by this worker: RUNNING, leased, attempt 1.
            message.status = StreamStatus.RUNNING
            message.worker = local.worker_id
            message.attempts = 1
            message.lease_expires_at = ctx.db_now + datetime.timedelta(seconds=local.lease_seconds)
            message.claimed_at = ctx.db_now
            mine_message = message
        messages.append(message)
        journal.append(
            Journal(
                job=job,
                step=step.seq,
                event=JournalEvent.STEP_SCHEDULED,
                name=step.name,
                data={"queue": step.queue},
            )
        )
    for step in ctx.new_timers:
        messages.append(timer_message(job, step))
        journal.append(
            Journal(
                job=job,
                step=step.seq,
                event=JournalEvent.TIMER_SET,
                name=step.name,
                data={"until": step.wake_at.isoformat()} if step.wake_at else None,
            )
        )
    follow_up = False
    if ctx.new_children:
        # Creates the child jobs and links the (still unsaved) steps to them.
        started, follow_up = start_children(ctx, journal)
        messages.extend(started)
    human.write_tasks(ctx, journal)
    if ctx.consumed_signals:
        Signal.objects.bulk_update(ctx.consumed_signals, ["step"])
    if ctx.cancelled_timers:
        Stream.objects.filter(
            job=job,
            kind=StreamKind.TIMER,
            step__in=ctx.cancelled_timers,
            status=StreamStatus.SCHEDULED,
        ).delete()
    if move is not None and move.status == job.status and not move.start and not move.clear_error:
        move = None  # the job's row stays as it is
    written = write_turn(
        job.id,
        move=move,
        new_steps=ctx.new_steps,
        changed_steps=ctx.changed_steps,
        messages=messages,
        journal=journal,
        notify=_wake_ups(messages),
        ack=ack,
    )
    if follow_up:
        # A child step settled at once (its workflow_id named a finished job): the
        # replay that sees its outcome is the next turn.
        enqueue_turn(job.id)
    _send_signals(ctx)
    if mine is None or mine_message is None or written.mine is None:
        return None, written
    return Claimed(
        id=written.mine,
        kind=StreamKind.STEP,
        job_id=job.id,
        step=mine.seq,
        name=mine.name,
        payload=mine.input,
        attempts=1,
        queue=mine.queue,
        cache=_cache(ctx, whole_move, written),
    ), written


def _send_signals(ctx: WorkflowContext) -> None:
    """Send the signals the turn's code sent, in the turn's transaction: they and the
    steps that record them commit together, so each is sent once."""
    from hotmesh_django.engine.control import send_signal

    for workflow_id, name, payload in ctx.outgoing_signals:
        try:
            send_signal(workflow_id, name, payload, actor=f"workflow {ctx.job.workflow_id}")
        except (JobNotFound, JobFinishedError, NotAWorkflow) as exc:
            # The target was there when the code ran; it ended (or went) since.
            logger.warning(
                "signal not delivered job=%s to=%s name=%s reason=%s",
                ctx.job.workflow_id,
                workflow_id,
                name,
                exc,
            )


def _cache(ctx: WorkflowContext, move: StatusMove | None, written: Written) -> TurnCache | None:
    """The job as this turn left it, for the next step's ack (None: not known whole)."""
    if move is None or written.version is None:
        return None
    job = ctx.job
    job.status = move.status
    if move.start and job.started_at is None:
        job.started_at = ctx.db_now
    if move.clear_error:
        job.error = None
    return TurnCache(
        job=job, steps=ctx.steps, version=written.version, db_now=ctx.db_now, clock=time.monotonic()
    )


def _take_one(ctx: WorkflowContext, local: Local) -> Activity | None:
    """Pick the first new activity step this worker can run itself, and mark it
    RUNNING (attempt 1) before it is written."""
    for step, definition in ctx.new_activity_calls:
        if (
            local.serves(step.queue)
            and registry.has_activity(step.name)
            and not definition.options.delay_seconds()
        ):
            step.status = JobStatus.RUNNING
            step.attempts = 1
            step.started_at = ctx.db_now  # the clock created_at uses too
            return step
    return None


def _wake_ups(messages: list[Stream]) -> list[str]:
    """The NOTIFY payloads that wake workers for these new messages."""
    payloads = {f"q:{m.queue}" for m in messages if m.status == StreamStatus.READY}
    timers = [
        m.visible_at
        for m in messages
        if m.status == StreamStatus.SCHEDULED and isinstance(m.visible_at, datetime.datetime)
    ]
    if timers:
        payloads.add(f"t:{min(t.timestamp() for t in timers)}")
    return sorted(payloads)


def _park(job: Job, message: str) -> None:
    """Keep a job whose workflow code is missing, and look again later."""
    logger.error("workflow code missing job=%s name=%s", job.workflow_id, job.name)
    error = {"type": "UnknownWorkflow", "message": message}
    if job.error != error:
        Journal.objects.create(job=job, event=JournalEvent.PARKED, name=job.name, data=error)
    parked = Job.objects.filter(pk=job.pk)
    if not parked.transition(JobStatus.WAITING, error=error):
        # Already WAITING (its code went while it waited for a timer or a signal):
        # no move, but the job must still say why it does not go on.
        parked.filter(status=JobStatus.WAITING).update(error=error, updated_at=Now())
    _look_again_later(job)


def check_readable(job: Job, steps: Any) -> None:
    """Raise CodecError unless every stored value the replay may use was unsealed."""
    for value in (job.input, job.state):
        readable(value)
    for step in steps:
        readable(step.output)
        readable(step.error)


def _wait_for_codec(job: Job, error: CodecError) -> None:
    """Put a job aside whose stored values this process cannot unseal, and look again
    in PARK_SECONDS. The job's own rows are left alone: a process with a wrong key
    must write nothing sealed that the others then could not read either, and once
    the key is fixed the job goes on from where it was."""
    logger.error(
        "cannot unseal stored values, job put aside job=%s retry_in=%s error=%s "
        "(check HOTMESH_CODEC and HOTMESH_CODEC_KEYS)",
        job.workflow_id,
        PARK_SECONDS,
        error,
    )
    _look_again_later(job)


def _look_again_later(job: Job) -> None:
    """Queue a timer that runs the job's turn again in PARK_SECONDS. One is enough,
    however many turns of the job were put aside meanwhile (each signal to a parked
    job queues one)."""
    due = Now() + datetime.timedelta(seconds=PARK_SECONDS + 1)
    if job_timers(job).filter(visible_at__lte=due).exists():
        return
    job_timer(job, Now() + datetime.timedelta(seconds=PARK_SECONDS)).save()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_notify(%s, %s)", [WORK_CHANNEL, f"t:{time.time() + PARK_SECONDS}"]
        )


def _continue_as_new(job: Job, data: Any, timeout: float | None) -> None:
    """Close this run under a run id and start the next one under the workflow_id.

    Handles keep following the workflow_id, so `result()` waits for the last run.
    A parent waiting on this child is handed over to the new run. Each run has the
    workflow's `timeout` from its own start: a poller that continues as new forever
    would otherwise be failed by its first run's deadline (or, as before, by none).
    """
    if job.parent_id is not None:
        parent = Job.objects.filter(pk=job.parent_id).values_list("status", "workflow_id").first()
        if parent is None or parent[0] in FINISHED_STATUSES:
            # The parent ended while this run was going (its cancel of its children
            # may have been chasing a chain of runs that continued faster than it
            # could cancel them): the chain ends here, not in a run nobody awaits.
            ended = "is gone" if parent is None else f"{parent[1]!r} ended ({parent[0]})"
            finish_job(
                job.pk,
                JobStatus.CANCELLED,
                error={"type": "JobCancelled", "message": f"Its parent workflow {ended}."},
            )
            return
    deadline = None
    if timeout is not None:
        deadline = job.db_now + datetime.timedelta(seconds=timeout)  # type: ignore[attr-defined]
    workflow_id = job.workflow_id
    run_id = f"{workflow_id[:230]}#run-{job.pk}"
    Job.objects.filter(pk=job.pk).update(workflow_id=run_id, parent=None, parent_step=None)
    finish_job(job.pk, JobStatus.SUCCESSFUL, output={"continued_as_new": workflow_id})
    following = Job.objects.create(
        workflow_id=workflow_id,
        name=job.name,
        kind=JobKind.WORKFLOW,
        queue=job.queue,
        priority=job.priority,
        input=data,
        search={**job.search, "previous_run": run_id},
        state=job.state,
        parent_id=job.parent_id,
        parent_step=job.parent_step,
        concurrency_key=job.concurrency_key,
        watched=job.watched,
        deadline_at=deadline,
    )
    signals.started_on_commit(following)
    if deadline is not None:
        job_timer(following, deadline).save()
    Journal.objects.bulk_create(
        [
            Journal(job=job, event=JournalEvent.CONTINUED, data={"next_run": workflow_id}),
            Journal(
                job=following,
                event=JournalEvent.CREATED,
                name=job.name,
                data={"previous_run": run_id},
            ),
        ]
    )
    enqueue_turn(following.pk)
