"""Sticky turns: a step's success and the turn it leads to, in one statement.

When a turn hands this worker the job's next step (see turn._write), the worker
keeps what that turn replayed from: the job, its steps and the version (xmin) of the
job row the turn wrote. When the step succeeds, the worker replays the workflow from
that copy before it touches the database, then writes the step's success and all
the turn produced (the next step, its message already claimed, the journal, the
job's status, or the job's end) as a single autocommitted statement: one round trip
instead of BEGIN, ack-and-lock, write and COMMIT.

The statement is guarded by the job row's version. Every other writer that can
change what a replay sees moves the job row first (a turn's write, a cancel, a
retry, a human task's answer, a continue-as-new, a result() waiter marking the job
watched), so an unchanged version means the copy is exact. A signal is the one
write that does not touch the job row, and a replay reads signals from the table
itself. When the guard fails (or the lease was lost) the statement writes nothing
and the ack takes the usual path, which reads everything again under the job's lock.

Only turns whose every write fits that statement go this way: new activity steps,
a status move, or the end of a job without a parent. Anything else (timers, child
workflows, signals taken, human tasks, search attributes, errors) is left to the
usual path; the replay done here is then thrown away.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import time
from typing import Any

from django.db import transaction
from psycopg.types.json import Jsonb

from hotmesh_django import faults, registry, signals
from hotmesh_django.context import WorkflowContext
from hotmesh_django.engine import prepared
from hotmesh_django.engine.claim import Claimed, JobRead
from hotmesh_django.engine.notify import DONE_CHANNEL, tables
from hotmesh_django.engine.rows import GUARD, StepAck, ack_guard
from hotmesh_django.exceptions import CodecError, UnknownDefinition
from hotmesh_django.models import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    Activity,
    Job,
    JobKind,
    JobStatus,
    Journal,
    JournalEvent,
    StepKind,
)
from hotmesh_django.serialization import (
    decode_call,
    decode_headers,
    encode_value,
    open_stored,
    seal,
)


@dataclasses.dataclass(kw_only=True)
class TurnCache:
    """What a turn replayed from, as it left the job: kept with the step it handed
    this worker, used (once) by that step's ack."""

    job: Job
    steps: dict[int, Activity]
    version: str  # the job row's xmin after the turn's write
    db_now: datetime.datetime  # the turn's database clock ...
    clock: float  # ... and time.monotonic() when it was read

    def now(self) -> datetime.datetime:
        """The database clock now, as far as this worker can tell without asking."""
        return self.db_now + datetime.timedelta(seconds=time.monotonic() - self.clock)


def jsonb_view(value: Any) -> Any:
    """`value` as reading it back from a jsonb column gives it: object keys in
    jsonb's order (shorter keys first, then bytewise) and no negative zero.

    A replay must see a step's result exactly as every later replay, which reads it
    from the table, will. Values reach here already through `to_json` (which tags
    the floats jsonb would change), so the JSON text round trip does the rest.
    """
    return _reorder(json.loads(json.dumps(value)))


def _reorder(value: Any) -> Any:
    if isinstance(value, dict):
        keys = sorted(
            value,
            key=lambda k: (
                len(k.encode("utf-8", "surrogatepass")),
                k.encode("utf-8", "surrogatepass"),
            ),
        )
        return {k: _reorder(value[k]) for k in keys}
    if isinstance(value, list):
        return [_reorder(v) for v in value]
    if isinstance(value, float) and value == 0.0:
        return 0.0
    return value


@dataclasses.dataclass(frozen=True)
class Taken:
    """A message this module handled, and the step its write handed this worker."""

    following: Claimed | None


def ack_sticky(
    message: Claimed, local: Any, stored_output: Any
) -> tuple[bool, Claimed | None] | None:
    """Ack `message`'s success together with the turn it leads to, from its cache.

    `stored_output` is the step's result as it is stored (sealed). Return (True, the
    next message this worker claimed) when the statement wrote, or None when this
    path does not apply or its guard failed: then nothing was written.
    """
    cache = message.cache
    if not isinstance(cache, TurnCache) or message.step is None:
        return None
    job, steps = cache.job, cache.steps
    step = steps.get(message.step)
    if (
        step is None
        or job.started_at is None
        or not local.serves(job.queue)
        or _others_pending(steps, message.step)
    ):
        return None
    db_now = cache.now()
    step.status, step.error, step.finished_at = JobStatus.SUCCESSFUL, None, db_now
    step.output = open_stored(jsonb_view(stored_output))
    step.attempts = message.attempts
    entry = Journal(
        job=job,
        step=step.seq,
        event=JournalEvent.STEP_COMPLETED,
        name=step.name,
        attempt=message.attempts,
    )
    taken = _replay_and_write(message, local, cache, db_now, step, entry, stored_output)
    return None if taken is None else (True, taken.following)


def turn_from_claim(message: Claimed, local: Any) -> Taken | None:
    """Run the turn in `message` from the job its claim read, in one guarded write.

    Return None when this path does not apply or the guard failed (nothing was
    written): then the usual path locks the job and reads it again.
    """
    read = message.cache
    if not isinstance(read, JobRead):
        return None
    from hotmesh_django.engine import turn

    job = turn.job_from_row(read.row)
    if job is None or job.kind != JobKind.WORKFLOW or not registry.has_workflow(job.name):
        return None
    try:
        steps = turn.steps_of(job)
    except ValueError:
        return None  # undecodable steps: the usual path fails the job, saying so
    if turn.missing_steps(steps) or _unreadable(job, steps):
        return None
    db_now = job.db_now  # type: ignore[attr-defined]
    cache = TurnCache(
        job=job, steps=steps, version=read.version, db_now=db_now, clock=time.monotonic()
    )
    return _replay_and_write(message, local, cache, db_now, None, None, None)


def _replay_and_write(
    message: Claimed,
    local: Any,
    cache: TurnCache,
    db_now: datetime.datetime,
    acked: Activity | None,
    entry: Journal | None,
    stored_output: Any,
) -> Taken | None:
    """Replay the job in `cache` and write what the turn produced together with the
    end of `message` (and `acked`, the step it ran), guarded by the cache's version."""
    job, steps = cache.job, cache.steps
    if job.status in FINISHED_STATUSES or job.deadline_at is not None:
        return None  # the usual path checks the deadline on the database's clock
    try:
        definition = registry.get_workflow(job.name)
        args, kwargs = decode_call(job.input)
        headers = decode_headers(job.input)
    except (UnknownDefinition, CodecError, ValueError):
        return None
    # Imported here: turn.py builds TurnCache objects, so it imports this module.
    from hotmesh_django.engine import turn

    ctx = turn.workflow_context(job, steps, db_now, headers)
    func = turn.workflow_func(definition, job, headers)
    result, error, returned = turn.replay(ctx, func, args, kwargs)
    taken = _write_replayed(
        message, local, cache, ctx, (result, error, returned), acked, entry, stored_output
    )
    if taken is None:
        # The usual path replays again: it must draw what this replay drew.
        turn.carry_draws(ctx)
    return taken


def _write_replayed(
    message: Claimed,
    local: Any,
    cache: TurnCache,
    ctx: WorkflowContext,
    outcome: tuple[Any, BaseException | None, bool],
    acked: Activity | None,
    entry: Journal | None,
    stored_output: Any,
) -> Taken | None:
    from hotmesh_django.engine import turn

    job = cache.job
    result, error, returned = outcome
    if error is not None or not _fits(ctx):
        return None
    ack = StepAck(
        message_id=message.id,
        worker_id=local.worker_id,
        attempts=message.attempts,
        version=cache.version,
    )
    if returned:
        if acked is None:
            return None  # a turn that ends its job: the usual path
        return _finish(message, cache, ack, stored_output, result)
    if not ctx.suspended:
        return None
    move = turn.status_move(job, ctx)
    if move is None:
        return None
    if acked is not None:
        ctx.changed_steps.append(acked)
        faults.point("ack_send")  # write_turn marks "turn_write" next
    following, written = turn.write(
        ctx, local, move, ack=ack, entries=[entry] if entry is not None else []
    )
    if not written.acked:
        return None
    return Taken(following)


def _unreadable(job: Job, steps: dict[int, Activity]) -> bool:
    from hotmesh_django.engine import turn

    try:
        turn.check_readable(job, steps.values())
    except CodecError:
        return True
    return False


def _others_pending(steps: dict[int, Activity], seq: int) -> bool:
    # With other steps still out, the usual path collapses their completions into
    # one queued turn instead of replaying on each.
    return any(
        s.seq != seq
        and s.kind in (StepKind.ACTIVITY, StepKind.CHILD)
        and s.status in (JobStatus.READY, JobStatus.RUNNING)
        for s in steps.values()
    )


def _fits(ctx: WorkflowContext) -> bool:
    """Whether everything the replay produced fits the one guarded statement."""
    return (
        ctx.codec_error is None
        and ctx.nondeterminism is None
        and ctx.continued is None
        and not ctx.new_children
        and not ctx.new_timers
        and not ctx.consumed_signals
        and not ctx.outgoing_signals
        and not ctx.cancelled_timers
        and not ctx.changed_steps
        and not ctx.search
        and not ctx.state
        and all(s.kind == StepKind.ACTIVITY for s in ctx.new_steps)
    )


# The last step's success and the job's end, behind the same guard as a turn's write
# (rows.ack_guard): what complete._FINISH does for a job without a parent (the turn
# checked that; a parent can change only with the job row's version).
_FINISH = """
WITH {guard}, a AS (
    UPDATE {activity} AS x
       SET status = 'SUCCESSFUL', output = %(output)s, error = NULL,
           attempts = %(attempts)s, finished_at = statement_timestamp()
     WHERE x.job_id = %(job)s AND x.seq = %(step)s AND {acked}
), j AS (
    UPDATE {job} AS x
       SET status = 'SUCCESSFUL', output = %(result)s, error = NULL,
           finished_at = statement_timestamp(), updated_at = statement_timestamp()
     WHERE x.id = %(job)s AND {acked}
 RETURNING x.id, x.watched
), d AS (
    -- By the job's id, not j.id: a planner with stale statistics would otherwise
    -- scan the whole table to hash-join on it. `USING j` keeps it conditional.
    DELETE FROM {stream} AS s USING j WHERE s.job_id = %(job)s AND s.id <> %(ack_id)s
), c AS (
    UPDATE {activity} AS x SET status = 'CANCELLED', finished_at = statement_timestamp()
      FROM j WHERE x.job_id = %(job)s AND x.seq <> %(step)s
       AND x.status IN ('READY', 'RUNNING', 'WAITING')
), h AS (
    UPDATE {human_task} AS t SET status = 'CANCELLED', updated_at = statement_timestamp()
      FROM j WHERE t.job_id = %(job)s AND t.status IN ('OPEN', 'CLAIMED')
), r AS (
    INSERT INTO {journal} (job_id, step, event, name, attempt, data, created_at)
    SELECT id, %(step)s::int, 'step_completed', %(name)s, %(attempts)s::int, NULL::jsonb,
           statement_timestamp()
      FROM j
    UNION ALL
    SELECT id, NULL, 'completed', '', NULL, NULL, statement_timestamp() FROM j
)
SELECT (SELECT count(*) FROM j),
       (SELECT count(*) FROM (SELECT pg_notify('{done}', id::text) FROM j WHERE watched) AS n)
"""


@functools.cache
def _finish_sql() -> str:
    return _FINISH.format(guard=ack_guard(), acked=GUARD, done=DONE_CHANNEL, **tables())


def _finish(
    message: Claimed, cache: TurnCache, ack: StepAck, stored_output: Any, result: Any
) -> Taken | None:
    if cache.job.parent_id is not None or cache.job.started_at is None:
        return None  # the usual path wakes the parent
    if any(s.kind == StepKind.CHILD and s.status in ACTIVE_STATUSES for s in cache.steps.values()):
        return None  # the usual path cancels the children it leaves running
    try:
        output = encode_value(result, what="the workflow's result")
    except (TypeError, ValueError):
        return None  # the usual path fails the job with the reason
    params: dict[str, Any] = {
        "job": cache.job.id,
        "ack_version": ack.version,
        "ack_id": ack.message_id,
        "ack_worker": ack.worker_id,
        "ack_attempts": ack.attempts,
        "output": Jsonb(stored_output),
        "result": Jsonb(seal(output)),
        "attempts": message.attempts,
        "step": message.step,
        "name": message.name,
    }
    with prepared.cursor() as cursor:
        faults.point("ack_send")
        cursor.execute(_finish_sql(), params)
        row = cursor.fetchone()
    if not row or not row[0]:
        return None
    transaction.on_commit(
        functools.partial(
            signals.finished, job_id=cache.job.id, name=cache.job.name, status="SUCCESSFUL"
        )
    )
    return Taken(None)
