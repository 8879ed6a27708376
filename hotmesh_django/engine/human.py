"""Human tasks: create them in a turn, and claim, release and resolve them.

A `hm.wait_for_human` step is a HUMAN step with a HumanTask row beside it. The turn
that records the step creates the task, and the turn that finds its due time passed
expires it, each in the turn's own transaction. `resolve_task` writes the answer
onto the waiting step and queues the job's next turn in the same transaction that
moves the task to RESOLVED, the way a finished child wakes its parent. It takes the
job's row lock first, as a turn does, so an answer and a timeout cannot both win.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from hotmesh_django.engine.complete import enqueue_turn, timer_message
from hotmesh_django.exceptions import HumanTaskError
from hotmesh_django.models import (
    Activity,
    HumanTask,
    HumanTaskStatus,
    Job,
    JobStatus,
    Journal,
    JournalEvent,
    StepKind,
    Stream,
    StreamKind,
    StreamStatus,
)
from hotmesh_django.serialization import encode_value

if TYPE_CHECKING:
    from hotmesh_django.context import WorkflowContext

logger = logging.getLogger(__name__)


# -- inside a turn ------------------------------------------------------------------------


def write_tasks(ctx: WorkflowContext, journal: list[Journal]) -> None:
    """Create the tasks of the turn's new HUMAN steps and expire those that timed out."""
    job = ctx.job
    new = [s for s in ctx.new_steps if s.kind == StepKind.HUMAN]
    if new:
        tasks = HumanTask.objects.bulk_create(
            [
                HumanTask(
                    job=job,
                    step=step.seq,
                    role=step.name,
                    data=(step.input or {}).get("data"),
                    due_at=step.wake_at,
                    # A zero timeout: the step failed as it was made.
                    status=(
                        HumanTaskStatus.EXPIRED
                        if step.status == JobStatus.FAILED
                        else HumanTaskStatus.OPEN
                    ),
                )
                for step in new
            ]
        )
        for task in tasks:
            journal.append(_entry(job, task.step, JournalEvent.TASK_CREATED, task.role, task))
            if task.status == HumanTaskStatus.EXPIRED:
                journal.append(_entry(job, task.step, JournalEvent.TASK_EXPIRED, task.role, task))
    expired = [
        s for s in ctx.changed_steps if s.kind == StepKind.HUMAN and s.status == JobStatus.FAILED
    ]
    if expired:
        HumanTask.objects.filter(job=job, step__in=[s.seq for s in expired]).transition(
            HumanTaskStatus.EXPIRED
        )
        for step in expired:
            journal.append(
                Journal(job=job, step=step.seq, event=JournalEvent.TASK_EXPIRED, name=step.name)
            )


def _entry(job: Job, step: int, event: str, name: str, task: HumanTask, by: str = "") -> Journal:
    data: dict[str, Any] = {"task": task.pk}
    if by:
        data["by"] = by
    return Journal(job=job, step=step, event=event, name=name, data=data)


# -- operator calls -------------------------------------------------------------------------


def _not_due() -> Q:
    """Tasks whose due time has not passed on the database's clock.

    A task past due is refused even before a worker expires it, so the deadline
    holds while no worker runs.
    """
    return Q(due_at__isnull=True) | Q(due_at__gt=Now())


def _name(user: Any) -> str:
    get_username = getattr(user, "get_username", None)
    return str(get_username() if get_username else user)


def _get(task_id: int) -> HumanTask:
    try:
        if isinstance(task_id, bool):
            raise TypeError  # int(True) is 1: never take a flag for an id
        task_id = int(task_id)
    except (TypeError, ValueError):
        raise HumanTaskError(f"{task_id!r} is not a human task id.", code="not_found") from None
    task = HumanTask.objects.filter(pk=task_id).first()
    if task is None:
        raise HumanTaskError(f"No human task has id {task_id}.", code="not_found")
    return task


def may_act(task: HumanTask, user: Any) -> bool:
    """Return whether `user` is an active user in the task's role (or a superuser)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    if not getattr(user, "is_active", False):
        return False
    if getattr(user, "is_superuser", False):
        return True
    groups = getattr(user, "groups", None)
    return groups is not None and bool(groups.filter(name=task.role).exists())


def _check_role(task: HumanTask, user: Any) -> None:
    if not may_act(task, user):
        raise HumanTaskError(
            f"{_name(user)} is not in role {task.role!r}, so may not act on task {task.pk}.",
            code="not_allowed",
        )


def _refusal(task_id: int, user: Any, verb: str) -> HumanTaskError:
    """Explain, from a fresh read, why a guarded update on the task moved nothing."""
    task = HumanTask.objects.select_related("claimed_by", "resolved_by", "job").get(pk=task_id)
    if task.status == HumanTaskStatus.RESOLVED:
        who = f" by {_name(task.resolved_by)}" if task.resolved_by else ""
        return HumanTaskError(
            f"Task {task_id} was already resolved{who}; it cannot be {verb} again.",
            code="resolved",
        )
    if task.status == HumanTaskStatus.EXPIRED:
        return HumanTaskError(
            f"Task {task_id} expired: the workflow stopped waiting for it.", code="expired"
        )
    if task.status == HumanTaskStatus.CANCELLED:
        return HumanTaskError(
            f"Task {task_id} was cancelled: its job is {task.job.status}.", code="cancelled"
        )
    if task.due_at is not None and task.due_at <= timezone.now():
        return HumanTaskError(
            f"Task {task_id} is past its due time ({task.due_at.isoformat()}); it expires.",
            code="expired",
        )
    if task.status == HumanTaskStatus.CLAIMED and task.claimed_by_id != user.pk:
        holder = _name(task.claimed_by) if task.claimed_by else "someone else"
        code = "claimed" if verb == "claimed" else "not_claimant"
        return HumanTaskError(f"Task {task_id} is claimed by {holder}, not by you.", code=code)
    if task.status == HumanTaskStatus.OPEN:
        return HumanTaskError(
            f"Task {task_id} is not claimed: claim it before it can be {verb}.",
            code="not_claimant",
        )
    return HumanTaskError(f"Task {task_id} is {task.status}.", code=task.status.lower())


def claim_task(task_id: int, user: Any) -> HumanTask:
    """Claim an open task for `user`, who must be in its role (or a superuser).

    Claiming a task `user` already holds changes nothing. Raise HumanTaskError when
    someone else holds it, or it is resolved, expired or cancelled.
    """
    task = _get(task_id)
    _check_role(task, user)
    with transaction.atomic():
        moved = HumanTask.objects.filter(
            _not_due(), pk=task.pk, status=HumanTaskStatus.OPEN
        ).transition(HumanTaskStatus.CLAIMED, claimed_by=user, claimed_at=Now())
        if not moved:
            current = HumanTask.objects.get(pk=task.pk)
            if current.status == HumanTaskStatus.CLAIMED and current.claimed_by_id == user.pk:
                return current
            raise _refusal(task.pk, user, "claimed")
        Journal.objects.create(
            job_id=task.job_id,
            step=task.step,
            event=JournalEvent.TASK_CLAIMED,
            name=task.role,
            data={"task": task.pk, "by": _name(user)},
        )
    logger.info("human task claimed task=%s by=%s", task.pk, _name(user))
    return HumanTask.objects.get(pk=task.pk)


def release_task(task_id: int, user: Any) -> HumanTask:
    """Give a claimed task back to its role, OPEN for anyone in it to claim.

    Only the user who claimed it may release it, or a superuser (to free the task of
    someone who is away). Raise HumanTaskError otherwise.
    """
    task = _get(task_id)
    _check_role(task, user)
    with transaction.atomic():
        mine = HumanTask.objects.filter(pk=task.pk, status=HumanTaskStatus.CLAIMED)
        if not getattr(user, "is_superuser", False):
            mine = mine.filter(claimed_by=user)
        if not mine.transition(HumanTaskStatus.OPEN, claimed_by=None, claimed_at=None):
            raise _refusal(task.pk, user, "released")
        Journal.objects.create(
            job_id=task.job_id,
            step=task.step,
            event=JournalEvent.TASK_RELEASED,
            name=task.role,
            data={"task": task.pk, "by": _name(user)},
        )
    logger.info("human task released task=%s by=%s", task.pk, _name(user))
    return HumanTask.objects.get(pk=task.pk)


def resolve_task(task_id: int, answer: Any, user: Any) -> HumanTask:
    """Answer a task `user` has claimed; the waiting workflow gets `answer` back.

    The task moves to RESOLVED, the answer is recorded on the workflow's step and its
    next turn is queued, in one transaction. Raise HumanTaskError when `user` does
    not hold the claim or the task is already resolved, expired or cancelled, and
    TypeError (or PayloadTooLarge) for an answer that is not JSON.
    """
    data = encode_value(answer, what="the answer")
    task = _get(task_id)
    _check_role(task, user)
    with transaction.atomic():
        # The job's row lock first, as a turn takes it: a turn expiring this task and
        # this answer then run one after the other, never both. An UPDATE, not a
        # SELECT FOR UPDATE: the new row version tells a turn that waited for this
        # lock to read the steps again (see turn.STALE).
        Job.objects.filter(pk=task.job_id).update(updated_at=Now())
        moved = HumanTask.objects.filter(
            _not_due(), pk=task.pk, status=HumanTaskStatus.CLAIMED, claimed_by=user
        ).transition(HumanTaskStatus.RESOLVED, answer=data, resolved_by=user, resolved_at=Now())
        if not moved:
            raise _refusal(task.pk, user, "resolved")
        answered = Activity.objects.filter(
            job_id=task.job_id, seq=task.step, kind=StepKind.HUMAN, status=JobStatus.WAITING
        ).update(status=JobStatus.SUCCESSFUL, output=data, finished_at=Now())
        if not answered:
            # The step no longer waits (its job was re-run from an earlier step while
            # the task stayed open); the exception rolls the resolve back.
            raise HumanTaskError(
                f"Task {task.pk}'s workflow no longer waits for it.", code="cancelled"
            )
        Stream.objects.filter(
            job_id=task.job_id,
            kind=StreamKind.TIMER,
            step=task.step,
            status=StreamStatus.SCHEDULED,
        ).delete()
        Journal.objects.create(
            job_id=task.job_id,
            step=task.step,
            event=JournalEvent.TASK_RESOLVED,
            name=task.role,
            data={"task": task.pk, "by": _name(user)},
        )
        enqueue_turn(task.job_id)
    logger.info("human task resolved task=%s by=%s", task.pk, _name(user))
    return HumanTask.objects.get(pk=task.pk)


# -- operator retries -------------------------------------------------------------------------


def reopen_tasks(job: Job, steps: list[Activity]) -> None:
    """Reopen the cancelled tasks of HUMAN `steps` a retry put back to WAITING, and
    re-arm their timeouts (finishing the job dropped its timers)."""
    human = [s for s in steps if s.kind == StepKind.HUMAN]
    if not human:
        return
    HumanTask.objects.filter(
        job=job, step__in=[s.seq for s in human], status=HumanTaskStatus.CANCELLED
    ).transition(HumanTaskStatus.OPEN, claimed_by=None, claimed_at=None)
    Stream.objects.bulk_create([timer_message(job, s) for s in human if s.wake_at is not None])


def forget_tasks(job: Job, seq: int) -> None:
    """Drop the tasks of steps from `seq` on, which a re-run forgets; the replay
    makes new ones."""
    HumanTask.objects.filter(job=job, step__gte=seq).delete()
