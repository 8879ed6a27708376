"""Operations on a job from outside: signal, cancel, retry.

Each is a guarded engine call the API, the admin and the CLI share, and each
reports whether it moved anything.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models.functions import Now

from hotmesh_django.engine import human
from hotmesh_django.engine.complete import enqueue_turn, finish_tree, job_timers, timer_message
from hotmesh_django.engine.conflicts import retry_on_conflict
from hotmesh_django.exceptions import JobFinishedError, JobNotFound, NotAWorkflow, StepRunning
from hotmesh_django.models import (
    FINISHED_STATUSES,
    Activity,
    Job,
    JobKind,
    JobStatus,
    Journal,
    JournalEvent,
    Signal,
    StepKind,
    Stream,
    StreamKind,
    StreamStatus,
)
from hotmesh_django.serialization import check_signal_name, encode_value

logger = logging.getLogger(__name__)


def _get(workflow_id: str, using: str) -> Job:
    job = Job.objects.using(using).filter(workflow_id=workflow_id).first()
    if job is None:
        raise JobNotFound(f"No job has workflow_id {workflow_id!r}.")
    return job


def signal_target(workflow_id: str, using: str = DEFAULT_DB_ALIAS) -> Job:
    """The job `workflow_id`, which must still take signals: raise JobNotFound for an
    unknown job and JobFinishedError for a finished one."""
    job = _get(workflow_id, using)
    if job.status in FINISHED_STATUSES:
        raise JobFinishedError(
            f"Job {workflow_id!r} is {job.status}; it can no longer take signals."
        )
    return job


def send_signal(
    workflow_id: str,
    name: str,
    payload: Any = None,
    *,
    using: str = DEFAULT_DB_ALIAS,
    actor: str = "",
) -> None:
    """Buffer signal `name` for the job and queue a turn to deliver it.

    Raise JobNotFound for an unknown job, JobFinishedError for a finished one,
    ValueError for a bad name, NotAWorkflow (a ValueError) for a job that runs a
    single activity (it has no wait_for_signal to take it), and TypeError for a
    payload that is not JSON.
    """
    check_signal_name(name)
    data = encode_value(payload, what="the signal payload")
    with transaction.atomic(using=using):
        job = signal_target(workflow_id, using)
        if job.kind == JobKind.ACTIVITY:
            raise NotAWorkflow(
                f"Job {workflow_id!r} runs the activity {job.name!r}, which cannot wait "
                "for signals: signal a workflow."
            )
        Signal.objects.using(using).create(job=job, name=name, payload=data)
        Journal.objects.using(using).create(
            job=job,
            event=JournalEvent.SIGNAL_RECEIVED,
            name=name,
            data={"payload": data, **({"by": actor} if actor else {})},
        )
        if not _starts_later(job, using):
            enqueue_turn(job.id)


def _starts_later(job: Job, using: str) -> bool:
    """Whether `job` waits for a delayed start (`.using(delay=)`): its first turn is
    a timer not yet due. A signal is then only buffered: queueing a turn for it would
    start the job before its delay, and the first turn reads the signal anyway."""
    if job.started_at is not None:
        return False
    return job_timers(job, using).filter(visible_at__gt=Now()).exists()


def cancel_job(workflow_id: str, *, using: str = DEFAULT_DB_ALIAS, actor: str = "") -> bool:
    """Cancel the job and its active children; return False if it had finished."""
    return cancel_tree(workflow_id, using=using, actor=actor) > 0


def cancel_tree(workflow_id: str, *, using: str = DEFAULT_DB_ALIAS, actor: str = "") -> int:
    """As cancel_job(); return how many jobs were cancelled: the job and its active
    descendants (0 if the job had finished)."""
    cancel = functools.partial(_cancel_tree, workflow_id, using, actor)
    cancelled = retry_on_conflict(cancel, what="cancel")
    if cancelled:
        logger.info("job cancelled job=%s jobs=%s by=%s", workflow_id, cancelled, actor or "-")
    return cancelled


def _cancel_tree(workflow_id: str, using: str, actor: str) -> int:
    with transaction.atomic(using=using):
        job = _get(workflow_id, using)
        cancelled = _cancel(job.id, actor)
        for _ in range(_RUNS_FOLLOWED):
            if cancelled:
                break
            # The run read above may have continued as new while the cancel waited
            # for its lock: it is finished now, and the workflow_id names the next
            # run, which the handle follows and which is what is to be cancelled.
            current = Job.objects.using(using).filter(workflow_id=workflow_id).first()
            if current is None or current.pk == job.pk:
                break
            job = current
            cancelled = _cancel(job.id, actor)
    return cancelled


# Runs of one workflow_id a cancel follows (each continued as new under it).
_RUNS_FOLLOWED = 10


def _cancel(job_id: int, actor: str) -> int:
    error = {"type": "JobCancelled", "message": "Cancelled on request."}
    # The journal names the operator as a key of its own, as retry and signal do,
    # so an audit reads "by" and never parses the message.
    data: dict[str, Any] | None = None
    if actor:
        error["message"] = f"Cancelled by {actor}."
        data = {**error, "by": actor}
    return finish_tree(
        job_id,
        JobStatus.CANCELLED,
        error=error,
        data=data,
        children_error=error,
        children_data=data,
    )


def retry_job(workflow_id: str, *, using: str = DEFAULT_DB_ALIAS, actor: str = "") -> bool:
    """Re-run a FAILED job from its failed step, keeping the steps that finished.

    Return False (and change nothing) when the job is not FAILED.
    """
    with transaction.atomic(using=using):
        job = Job.objects.select_for_update(no_key=True).filter(workflow_id=workflow_id).first()
        if job is None:
            raise JobNotFound(f"No job has workflow_id {workflow_id!r}.")
        if job.status != JobStatus.FAILED:
            return False
        _revive_steps(job, actor)
        Job.objects.filter(pk=job.pk).transition(
            JobStatus.READY, error=None, output=None, finished_at=None
        )
        Journal.objects.create(
            job=job, event=JournalEvent.RETRIED, data={"by": actor} if actor else None
        )
        if job.kind == JobKind.WORKFLOW:
            enqueue_turn(job.id)
    logger.info("job retried job=%s by=%s", workflow_id, actor or "-")
    return True


def _revive_steps(job: Job, actor: str) -> None:
    """Re-queue the steps that failed, or were cut off when the job failed."""
    revived = Activity.objects.filter(
        job=job,
        status__in=[JobStatus.FAILED, JobStatus.CANCELLED],
        kind__in=[StepKind.ACTIVITY, StepKind.SLEEP],
    ).order_by("seq")
    messages = []
    for step in revived:
        if step.kind == StepKind.ACTIVITY:
            step.status = JobStatus.READY
            messages.append(
                Stream(
                    queue=step.queue,
                    job=job,
                    step=step.seq,
                    name=step.name,
                    kind=StreamKind.TASK if job.kind == JobKind.ACTIVITY else StreamKind.STEP,
                    concurrency_key=job.concurrency_key,
                    payload=step.input,
                    priority=job.priority,
                    status=StreamStatus.READY,
                )
            )
        else:
            step.status = JobStatus.WAITING
            messages.append(timer_message(job, step))
        step.error = None
        step.finished_at = None
    Activity.objects.bulk_update(list(revived), ["status", "error", "finished_at"])
    Stream.objects.bulk_create(messages)
    # Steps cut off by the failure that cannot be revived (signal waits, children,
    # human tasks) go back to waiting; their next turn looks at them afresh.
    waiting = list(Activity.objects.filter(job=job, status=JobStatus.CANCELLED))
    Activity.objects.filter(job=job, status=JobStatus.CANCELLED).update(
        status=JobStatus.WAITING, finished_at=None
    )
    human.reopen_tasks(job, waiting)
    for child in Job.objects.filter(parent=job, status=JobStatus.FAILED):
        retry_job(child.workflow_id, actor=actor)
        Activity.objects.filter(job=job, child=child).update(status=JobStatus.RUNNING, error=None)


def rerun_from_step(
    workflow_id: str, seq: int, *, using: str = DEFAULT_DB_ALIAS, actor: str = ""
) -> bool:
    """Re-run a job from step `seq`: forget that step and every later one, then replay.

    Steps before `seq` keep their recorded outcomes; the ones the job's failure cut
    off are queued again, as in retry_job. Signals that the forgotten steps consumed
    are buffered again, so the replay takes them afresh. Child workflows are not
    re-run: the replay links the existing child by its workflow_id. Messages of the
    forgotten steps are dropped, so a worker still running one finds its guarded ack
    moves nothing and discards the late result.

    Return False (and change nothing) when the job may not move back to READY:
    SUCCESSFUL and CANCELLED jobs are final. Raise JobNotFound for an unknown job,
    ValueError when the job has no step `seq`, and StepRunning while a worker runs
    step `seq` or a later one: dropping its message would hide that attempt from the
    queue's concurrency limit, and the step would run twice at once.
    """
    from hotmesh_django.models import sources_of

    with transaction.atomic(using=using):
        job = (
            Job.objects.using(using)
            .select_for_update(no_key=True)
            .filter(workflow_id=workflow_id)
            .first()
        )
        if job is None:
            raise JobNotFound(f"No job has workflow_id {workflow_id!r}.")
        if job.status not in sources_of(JobStatus.READY):
            return False
        if not Activity.objects.using(using).filter(job=job, seq=seq).exists():
            raise ValueError(f"Job {workflow_id!r} has no step {seq}.")
        running = (
            Stream.objects.using(using)
            .filter(job=job, step__gte=seq, status=StreamStatus.RUNNING)
            .order_by("step")
            .values_list("step", flat=True)
            .first()
        )
        if running is not None:
            raise StepRunning(
                f"Step {running} of job {workflow_id!r} is running; re-run it once it has finished."
            )
        queues = _forget_steps(job, seq, using)
        moved = (
            Job.objects.using(using)
            .filter(pk=job.pk)
            .transition(JobStatus.READY, error=None, output=None, finished_at=None)
        )
        if not moved:  # the row lock makes this unreachable; never overwrite anyway
            transaction.set_rollback(True, using=using)
            return False
        data: dict[str, Any] = {"from_step": seq}
        if actor:
            data["by"] = actor
        Journal.objects.using(using).create(
            job=job, step=seq, event=JournalEvent.RETRIED, data=data
        )
        if job.kind == JobKind.WORKFLOW:
            enqueue_turn(job.id)
        _notify_queues(queues, using)
    logger.info("job re-run job=%s from_step=%s by=%s", workflow_id, seq, actor or "-")
    return True


def _forget_steps(job: Job, seq: int, using: str) -> set[str]:
    """Drop steps from `seq` on and re-queue cut-off earlier ones; return queues to wake."""
    steps = Activity.objects.using(using).filter(job=job)
    Stream.objects.using(using).filter(job=job, step__gte=seq).delete()
    Signal.objects.using(using).filter(job=job, step__gte=seq).update(step=None)
    if job.kind == JobKind.ACTIVITY:
        # An activity job has one step: run it again with a fresh retry budget.
        steps.filter(seq__gte=seq).update(
            status=JobStatus.READY,
            attempts=0,
            output=None,
            error=None,
            started_at=None,
            finished_at=None,
        )
        Stream.objects.using(using).create(
            queue=job.queue,
            kind=StreamKind.TASK,
            job=job,
            step=1,
            name=job.name,
            payload=job.input,
            priority=job.priority,
            status=StreamStatus.READY,
        )
        return {job.queue}
    steps.filter(seq__gte=seq).delete()
    human.forget_tasks(job, seq)
    queues: set[str] = set()
    messages = []
    waiting: list[Activity] = []
    for step in steps.filter(seq__lt=seq, status=JobStatus.CANCELLED).order_by("seq"):
        if step.kind == StepKind.ACTIVITY:
            step.status = JobStatus.READY
            queues.add(step.queue)
            messages.append(
                Stream(
                    queue=step.queue,
                    kind=StreamKind.STEP,
                    job=job,
                    step=step.seq,
                    name=step.name,
                    payload=step.input,
                    priority=job.priority,
                    status=StreamStatus.READY,
                )
            )
        elif step.kind == StepKind.SLEEP:
            step.status = JobStatus.WAITING
            messages.append(timer_message(job, step))
        else:
            step.status = JobStatus.WAITING
            waiting.append(step)
        Activity.objects.using(using).filter(pk=step.pk).update(
            status=step.status, error=None, finished_at=None
        )
    Stream.objects.using(using).bulk_create(messages)
    human.reopen_tasks(job, waiting)
    return queues


def _notify_queues(queues: set[str], using: str) -> None:
    from django.db import connections

    from hotmesh_django.engine.notify import WORK_CHANNEL

    with connections[using].cursor() as cursor:
        for queue in sorted(queues):
            cursor.execute("SELECT pg_notify(%s, %s)", [WORK_CHANNEL, f"q:{queue}"])
