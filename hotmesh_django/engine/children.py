"""Starting a workflow's child workflows from its turn, and linking existing ones.

A child is a job whose `parent` and `parent_step` name the step waiting for it: when
it finishes, `complete.finish_job` writes its outcome onto that step and queues the
parent's next turn. A child's workflow_id is the caller's (`.using(workflow_id=)`)
or `<parent's workflow_id>/<step>`, so a turn run twice starts it once. When the id
is already taken:

- by a job that has finished, the step takes that job's outcome at once;
- by a running job with no parent, this step adopts it (it becomes the child);
- by this same step's child (a turn written twice), nothing changes;
- by another job's child, or twice in one turn, the step fails saying so: a job
  reports to one parent step, and a step waiting for a job that will never report
  to it would wait forever.

When a step is settled here, the parent needs another turn to see it (the caller
queues one).
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models.functions import Now

from hotmesh_django import signals
from hotmesh_django.choices import ACTIVE_STATUSES, FINISHED_STATUSES
from hotmesh_django.context import WorkflowContext
from hotmesh_django.engine.complete import child_outcome, job_timer
from hotmesh_django.models import (
    Activity,
    Job,
    JobKind,
    JobStatus,
    Journal,
    JournalEvent,
    Stream,
    StreamKind,
    StreamStatus,
)

_MAX_ID = 255


def child_workflow_id(parent: str, seq: int, chosen: str | None) -> str:
    """The workflow_id of the child that step `seq` of `parent` starts.

    `<parent>/<seq>` unless the caller chose one. A parent id near the 255-character
    limit has its end replaced by a digest, so the child's id still fits and is still
    the same on every replay.
    """
    if chosen:
        return chosen
    suffix = f"/{seq}"
    if len(parent) + len(suffix) <= _MAX_ID:
        return parent + suffix
    digest = hashlib.sha256(parent.encode()).hexdigest()[:16]
    return f"{parent[: _MAX_ID - len(suffix) - 17]}~{digest}{suffix}"


def start_children(ctx: WorkflowContext, journal: list[Journal]) -> tuple[list[Stream], bool]:
    """Create or link the children `ctx`'s turn started; link the (unsaved) steps.

    Return the messages that start the new children, and whether a step was settled
    here (then the parent needs another turn).
    """
    job = ctx.job
    wanted: dict[str, tuple[Activity, Any, Any]] = {}
    settled = False
    for step, definition, data in ctx.new_children:
        workflow_id = child_workflow_id(job.workflow_id, step.seq, definition.options.workflow_id)
        if workflow_id in wanted:
            _fail(step, f"The child workflow_id {workflow_id!r} is started twice in one turn.")
            journal.append(_failed_entry(job, step))
            settled = True
            continue
        wanted[workflow_id] = (step, definition, data)
    created, existing = _create(ctx, wanted)
    messages = [
        message
        for c in created.values()
        for message in _start_messages(c, wanted[c.workflow_id][1], ctx.db_now)
    ]
    for workflow_id, (step, _definition, _data) in wanted.items():
        child = created.get(workflow_id) or existing[workflow_id]
        linked = workflow_id in created or _link(job, step, child)
        if not linked:
            journal.append(_failed_entry(job, step))
            settled = True
            continue
        step.child = child
        journal.append(
            Journal(
                job=job,
                step=step.seq,
                event=JournalEvent.CHILD_STARTED,
                name=step.name,
                data={"workflow_id": workflow_id},
            )
        )
        if workflow_id in created:
            signals.started_on_commit(child)
            journal.append(
                Journal(
                    job=child,
                    event=JournalEvent.CREATED,
                    name=child.name,
                    data={"parent": job.workflow_id, "step": step.seq},
                )
            )
        elif _take_outcome(step, child):
            journal.append(
                Journal(
                    job=job,
                    step=step.seq,
                    event=JournalEvent.CHILD_FINISHED,
                    name=step.name,
                    data={"status": child.status},
                )
            )
            settled = True
    return messages, settled


def _failed_entry(job: Job, step: Activity) -> Journal:
    return Journal(
        job=job, step=step.seq, event=JournalEvent.STEP_FAILED, name=step.name, data=step.error
    )


def _create(
    ctx: WorkflowContext, wanted: dict[str, tuple[Activity, Any, Any]]
) -> tuple[dict[str, Job], dict[str, Job]]:
    """Insert the children whose ids are free; return the new jobs and the jobs that
    had the other ids, each by workflow_id."""
    job = ctx.job
    for _ in range(3):
        taken = {j.workflow_id: j for j in Job.objects.filter(workflow_id__in=list(wanted))}
        children = [
            _child_job(job, step, definition, data, workflow_id, ctx.db_now)
            for workflow_id, (step, definition, data) in wanted.items()
            if workflow_id not in taken
        ]
        try:
            # A savepoint: another parent (or a start elsewhere) may take one of the
            # ids between the read above and this insert; then read again.
            with transaction.atomic():
                Job.objects.bulk_create(children)
        except IntegrityError:
            continue
        return {c.workflow_id: c for c in children}, taken
    raise IntegrityError("Child workflow ids kept being taken while this turn started them.")


def _child_job(
    parent: Job,
    step: Activity,
    definition: Any,
    data: Any,
    workflow_id: str,
    now: datetime.datetime,
) -> Job:
    options = definition.options
    deadline = None
    if definition.timeout is not None:
        # As for a job started outside a workflow: the timeout counts from the end
        # of the delay, and a timer at the deadline fails the child if it still runs.
        seconds = options.delay_seconds() + definition.timeout
        deadline = now + datetime.timedelta(seconds=seconds)
    return Job(
        workflow_id=workflow_id,
        name=definition.name,
        kind=JobKind.WORKFLOW,
        queue=options.queue or definition.queue,
        priority=definition.priority if options.priority is None else options.priority,
        input=data,
        search=dict(options.search or {}),
        # A child works for the same tenant as its parent unless told otherwise.
        concurrency_key=options.concurrency_key or parent.concurrency_key,
        parent=parent,
        parent_step=step.seq,
        deadline_at=deadline,
    )


def _start_messages(child: Job, definition: Any, now: datetime.datetime) -> list[Stream]:
    """The message that runs a new child's first turn, after its `.using(delay=)`,
    and the timer at its deadline if it has a timeout."""
    delay = definition.options.delay_seconds()
    message = Stream(
        queue=child.queue,
        kind=StreamKind.TURN,
        job=child,
        name=child.name,
        priority=child.priority,
        status=StreamStatus.READY,
    )
    if delay > 0:
        # As a delayed start outside a workflow: a timer, since at most one TURN of
        # a job may be READY and a signal may queue one before the delay is over.
        message.kind = StreamKind.TIMER
        message.status = StreamStatus.SCHEDULED
        message.visible_at = now + datetime.timedelta(seconds=delay)
    if child.deadline_at is None:
        return [message]
    return [message, job_timer(child, child.deadline_at)]


def _link(parent: Job, step: Activity, child: Job) -> bool:
    """Whether `step` may wait for the existing job `child`: it has finished (its
    outcome is taken), or it reports to this step, or it reported to nobody and is
    adopted now. Otherwise fail the step, saying why."""
    if child.kind != JobKind.WORKFLOW or child.name != step.name:
        # Its outcome is not this workflow's, and an activity job never reports to a
        # parent step: waiting for it would wait forever.
        what = "an activity job" if child.kind != JobKind.WORKFLOW else "a workflow job"
        _fail(
            step,
            f"The child workflow_id {child.workflow_id!r} belongs to {what} of "
            f"{child.name!r}, not of {step.name!r}: choose another workflow_id.",
        )
        return False
    if child.status in FINISHED_STATUSES:
        return True
    if child.parent_id == parent.id and child.parent_step == step.seq:
        return True
    if child.parent_id is None and _in_line_of(parent, child):
        _fail(
            step,
            f"The child workflow_id {child.workflow_id!r} is this workflow's own, or one "
            "of its parents': a workflow cannot wait for itself. Choose another workflow_id.",
        )
        return False
    if child.parent_id is None:
        adopted = Job.objects.filter(
            pk=child.pk, parent__isnull=True, status__in=ACTIVE_STATUSES
        ).update(parent=parent, parent_step=step.seq, updated_at=Now())
        if adopted:
            return True
        child.refresh_from_db()  # it finished, or another parent adopted it, meanwhile
        if child.status in FINISHED_STATUSES:
            return True
    _fail(
        step,
        f"The child workflow_id {child.workflow_id!r} belongs to a job that reports to "
        "another workflow, and a job reports to one parent step: choose another workflow_id.",
    )
    return False


def _in_line_of(job: Job, other: Job) -> bool:
    """Whether `other` is `job` or one of its parents (adopting it would make a job
    wait for itself)."""
    parent_id: int | None = job.pk
    for _ in range(_MAX_DEPTH):
        if parent_id is None:
            return False
        if parent_id == other.pk:
            return True
        parent_id = Job.objects.filter(pk=parent_id).values_list("parent_id", flat=True).first()
    return True  # deeper than any real tree: refuse rather than loop


# Parents looked through for a loop; far deeper than any workflow tree.
_MAX_DEPTH = 10_000


def _take_outcome(step: Activity, child: Job) -> bool:
    """Settle `step` with `child`'s outcome if it has one; say whether it had."""
    if child.status not in FINISHED_STATUSES:
        return False
    step.status, step.output, step.error = child_outcome(child.status, child.output, child.error)
    return True


def _fail(step: Activity, message: str) -> None:
    step.status, step.output = JobStatus.FAILED, None
    step.error = {"type": "ChildWorkflowConflict", "message": message}
