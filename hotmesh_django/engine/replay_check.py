"""Replay recorded jobs against the current code without writing anything.

A pre-deploy check: each workflow job's recorded steps are handed to a fresh
`WorkflowContext` and the workflow function re-runs over them, exactly as a turn
would, but in a READ ONLY transaction that is always rolled back, and the new steps
the replay asks for are thrown away. A job whose replay reaches a step that differs
from its journal (NonDeterminismError), whose workflow code is missing, or whose
replay raises where the job did not, is reported.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.db.models.functions import Now

from hotmesh_django import registry
from hotmesh_django.context import WorkflowContext, activate
from hotmesh_django.engine.turn import workflow_context, workflow_func
from hotmesh_django.exceptions import (
    ActivityFailed,
    CodecError,
    NonDeterminismError,
    SignalTimeout,
    Suspend,
    UnknownDefinition,
)
from hotmesh_django.models import (
    ACTIVE_STATUSES,
    Activity,
    Job,
    JobKind,
    JobStatus,
)
from hotmesh_django.serialization import Unreadable, decode_call, decode_headers

OK = "ok"
MISMATCH = "mismatch"
MISSING = "missing"
ERROR = "error"
PROBLEMS = frozenset({MISMATCH, MISSING, ERROR})


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReplayResult:
    """How one job's replay went."""

    workflow_id: str
    name: str
    status: str  # the job's status
    outcome: str  # OK, MISMATCH, MISSING or ERROR
    detail: str  # where the replay stopped, or what went wrong

    @property
    def ok(self) -> bool:
        return self.outcome not in PROBLEMS


def select_jobs(
    *,
    since: datetime.timedelta,
    statuses: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
) -> Any:
    """Return the workflow jobs to check: active ones, and those finished since `since`.

    Active jobs (READY, RUNNING, WAITING) are checked whatever their age: they are
    the ones a deploy will replay. `statuses` and `names` narrow the selection.
    """
    recent = Q(status__in=list(ACTIVE_STATUSES)) | Q(updated_at__gte=Now() - since)
    jobs = Job.objects.filter(recent, kind=JobKind.WORKFLOW)
    if statuses:
        jobs = jobs.filter(status__in=list(statuses))
    if names:
        jobs = jobs.filter(name__in=list(names))
    return jobs.order_by("id")


def check_jobs(jobs: Iterable[Job]) -> Iterator[ReplayResult]:
    """Replay each job in `jobs`; yield one ReplayResult per job."""
    for job in jobs:
        yield replay_job(job)


def replay_job(job: Job) -> ReplayResult:
    """Replay `job` against the registered workflow code, writing nothing.

    The replay runs inside a READ ONLY transaction that is rolled back, so even a
    workflow that (wrongly) writes to the database from its own body cannot.
    """

    def result(outcome: str, detail: str) -> ReplayResult:
        return ReplayResult(
            workflow_id=job.workflow_id,
            name=job.name,
            status=job.status,
            outcome=outcome,
            detail=detail,
        )

    try:
        definition = registry.get_workflow(job.name)
    except UnknownDefinition as exc:
        return result(MISSING, str(exc))
    try:
        args, kwargs = decode_call(job.input)
        headers = decode_headers(job.input)
    except (TypeError, ValueError, CodecError) as exc:
        return result(ERROR, f"Cannot decode the job's input: {exc}")
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION READ ONLY")
            cursor.execute("SELECT now()")
            row = cursor.fetchone()
        db_now = row[0] if row else datetime.datetime.now(datetime.UTC)
        steps = {step.seq: step for step in Activity.objects.filter(job=job)}
        cut_off = _reopen_cut_off(steps)
        recorded = max(steps, default=0)
        ctx = workflow_context(job, steps, db_now, headers)
        # Through the execute_workflow middleware too: code that reads what the
        # middleware sets (a tenant, say) replays as it ran.
        func = workflow_func(definition, job, headers)
        returned, error = _run(ctx, func, args, kwargs)
        transaction.set_rollback(True)
    if ctx.nondeterminism is not None:
        return result(MISMATCH, str(ctx.nondeterminism))
    if error is not None:
        return _judge_error(job, error, result)
    if returned and not ctx.suspended:
        where = "returns"
    elif cut_off:
        where = f"reaches step {ctx.seq}, where the job ended"
    else:
        where = f"waits at step {ctx.seq}"
    new = [s for s in ctx.new_steps if not s.name.startswith("patched:")]
    if job.status == JobStatus.SUCCESSFUL and new:
        step = new[0]
        return result(
            MISMATCH,
            f"Step {step.seq}: the finished journal ends at step {recorded} but the "
            f"code now calls {step.kind.lower()} {step.name!r}.",
        )
    return result(OK, f"{where} ({recorded} recorded steps)")


def _reopen_cut_off(steps: dict[int, Activity]) -> bool:
    """Put back the steps that the job's end cut off as pending; return whether any.

    Finishing a job (a cancel, a workflow timeout, a failure elsewhere) closes its
    open steps as CANCELLED, and nothing else does. Read back as they are, the replay
    would take them for failed steps (a signal wait without a timeout "timed out", a
    child or a sleep "failed") and raise where the job never did. As the job's last
    turn saw them, they are still pending: the replay suspends there, which matches.
    RUNNING, not WAITING, so that the replay's later clock neither ends a sleep nor
    takes a signal that arrived after the job ended. The rows are only read: the
    transaction is read only and rolled back.
    """
    cut_off = [step for step in steps.values() if step.status == JobStatus.CANCELLED]
    for step in cut_off:
        step.status = JobStatus.RUNNING
        step.finished_at = None
    return bool(cut_off)


def _run(
    ctx: WorkflowContext, func: Any, args: list[Any], kwargs: dict[str, Any]
) -> tuple[bool, BaseException | None]:
    with activate(ctx):
        try:
            func(*args, **kwargs)
        except Suspend:
            return False, None
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            return False, exc
    return True, None


def _judge_error(
    job: Job, error: BaseException, result: Callable[[str, str], ReplayResult]
) -> ReplayResult:
    """A replay that raises is fine where the job recorded the same failure."""
    name = type(error).__name__
    recorded = None if isinstance(job.error, Unreadable) else (job.error or {}).get("type")
    if job.status == JobStatus.FAILED and recorded == name:
        return result(OK, f"fails again with {name}, as recorded")
    if isinstance(error, ActivityFailed | SignalTimeout) and job.status in ACTIVE_STATUSES:
        # A recorded step failure reaching the workflow: the next turn will see it too.
        return result(OK, f"raises the recorded {name} on its next turn")
    if isinstance(error, NonDeterminismError):
        return result(MISMATCH, str(error))
    return result(ERROR, f"The replay raised {name}: {error}")
