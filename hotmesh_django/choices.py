"""Status and kind vocabularies. Importable before Django's app registry is ready."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from django.db import models
from django.utils.translation import gettext_lazy as _


class JobStatus(models.TextChoices):
    # Waiting for a worker to take its next turn.
    READY = "READY", _("Ready")
    # A worker is running it, or one of its steps is scheduled or running.
    RUNNING = "RUNNING", _("Running")
    # Parked until a timer, a signal or a child job wakes it.
    WAITING = "WAITING", _("Waiting")
    # Finished with a result.
    SUCCESSFUL = "SUCCESSFUL", _("Successful")
    # Finished with an error; the admin can retry it.
    FAILED = "FAILED", _("Failed")
    # Stopped on request; its pending steps were dropped.
    CANCELLED = "CANCELLED", _("Cancelled")


ACTIVE_STATUSES: Final = (JobStatus.READY, JobStatus.RUNNING, JobStatus.WAITING)
FINISHED_STATUSES: Final = (JobStatus.SUCCESSFUL, JobStatus.FAILED, JobStatus.CANCELLED)

# Which statuses each job status may move to. Anything not listed is refused.
TRANSITIONS: Final[Mapping[str, frozenset[str]]] = {
    JobStatus.READY: frozenset(
        {
            JobStatus.RUNNING,
            JobStatus.WAITING,
            JobStatus.SUCCESSFUL,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
        }
    ),
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.READY,
            JobStatus.WAITING,
            JobStatus.SUCCESSFUL,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
        }
    ),
    JobStatus.WAITING: frozenset(
        {
            JobStatus.READY,
            JobStatus.RUNNING,
            JobStatus.SUCCESSFUL,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
        }
    ),
    JobStatus.FAILED: frozenset({JobStatus.READY}),  # a retry from the admin
    JobStatus.SUCCESSFUL: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


def status_in(column: str, *statuses: str, choices: type[models.TextChoices] = JobStatus) -> str:
    """SQL that holds when the status `column` is one of `statuses`, written as NOT IN
    the other `choices` so that no index on status, nor any partial index whose
    predicate names a status, can serve it.

    A write guarded by status must find its rows by key: the job of each row at hand
    (a claimed batch, a batch of acks), the message whose id it was given. Given
    `status = 'READY'`, a planner whose statistics lag behind a burst of starts (they
    still say few rows are READY) may walk every READY job through the status index
    once per row at hand instead (measured: 30 ms for a claim of 32 with 3,000 jobs
    waiting, against 1.5 ms), or find one RUNNING message by scanning the partial
    index of every RUNNING one. NOT IN is no index condition and proves no partial
    index's predicate, so the key is the only way in.
    """
    others = [s for s in choices.values if s not in statuses]
    return f"{column} NOT IN ({', '.join(repr(str(s)) for s in others)})"


def sources_of(target: str) -> list[str]:
    """Return the statuses a job may move to `target` from."""
    return [s for s, targets in TRANSITIONS.items() if target in targets]


class JobKind(models.TextChoices):
    # A workflow function, re-run from the top on every turn.
    WORKFLOW = "WORKFLOW", _("Workflow")
    # A single activity started on its own with .start().
    ACTIVITY = "ACTIVITY", _("Activity")


class StepKind(models.TextChoices):
    # An activity call, run by a worker on the activity's queue.
    ACTIVITY = "ACTIVITY", _("Activity")
    # A child workflow job.
    CHILD = "CHILD", _("Child workflow")
    # A durable timer.
    SLEEP = "SLEEP", _("Sleep")
    # A wait for a named signal.
    SIGNAL = "SIGNAL", _("Signal wait")
    # A recorded value: now(), uuid4(), random(), patched().
    VALUE = "VALUE", _("Recorded value")
    # A wait for a person to answer a HumanTask (hm.wait_for_human).
    HUMAN = "HUMAN", _("Human task")


class StreamKind(models.TextChoices):
    # Run the job's workflow function (replay and go on).
    TURN = "TURN", _("Workflow turn")
    # A delayed turn: a sleep ends, a signal wait or the workflow times out.
    TIMER = "TIMER", _("Timer")
    # Run one activity step of a workflow.
    STEP = "STEP", _("Workflow step")
    # Run an activity job started on its own.
    TASK = "TASK", _("Activity job")


class StreamStatus(models.TextChoices):
    # Not before visible_at; a worker promotes it to READY when it is due.
    SCHEDULED = "SCHEDULED", _("Scheduled")
    # Claimable now.
    READY = "READY", _("Ready")
    # Claimed by `worker` until `lease_expires_at`.
    RUNNING = "RUNNING", _("Running")


# A message this worker holds (see status_in): for writes that name the message's id,
# its worker and its attempt (a worker rescued while alive may claim it again).
HELD: Final = status_in("status", StreamStatus.RUNNING, choices=StreamStatus)


class JournalEvent(models.TextChoices):
    CREATED = "created", _("Created")
    STARTED = "started", _("Started")
    STEP_SCHEDULED = "step_scheduled", _("Step scheduled")
    STEP_COMPLETED = "step_completed", _("Step completed")
    STEP_RETRIED = "step_retried", _("Step failed, retry scheduled")
    STEP_FAILED = "step_failed", _("Step failed")
    LEASE_EXPIRED = "lease_expired", _("Lease expired")
    # Given back unfinished by a worker that was stopping: the attempt is not counted.
    RELEASED = "released", _("Released by a stopping worker")
    TIMER_SET = "timer_set", _("Timer set")
    TIMER_FIRED = "timer_fired", _("Timer fired")
    SIGNAL_RECEIVED = "signal_received", _("Signal received")
    SIGNAL_TIMED_OUT = "signal_timed_out", _("Signal wait timed out")
    CHILD_STARTED = "child_started", _("Child started")
    CHILD_FINISHED = "child_finished", _("Child finished")
    PARKED = "parked", _("Parked")
    CANCELLED = "cancelled", _("Cancelled")
    RETRIED = "retried", _("Retried by an operator")
    CONTINUED = "continued_as_new", _("Continued as a new run")
    TASK_CREATED = "task_created", _("Human task created")
    TASK_CLAIMED = "task_claimed", _("Human task claimed")
    TASK_RELEASED = "task_released", _("Human task released")
    TASK_RESOLVED = "task_resolved", _("Human task resolved")
    TASK_EXPIRED = "task_expired", _("Human task expired")
    COMPLETED = "completed", _("Completed")
    FAILED = "failed", _("Failed")


class HumanTaskStatus(models.TextChoices):
    # Waiting for someone in its role to claim it.
    OPEN = "OPEN", _("Open")
    # Claimed by one person, who alone may resolve or release it.
    CLAIMED = "CLAIMED", _("Claimed")
    # Answered; the workflow has the answer.
    RESOLVED = "RESOLVED", _("Resolved")
    # Its timeout passed first; the workflow saw HumanTaskTimeout.
    EXPIRED = "EXPIRED", _("Expired")
    # Its job finished (cancelled or failed) while it was open.
    CANCELLED = "CANCELLED", _("Cancelled")


OPEN_TASK_STATUSES: Final = (HumanTaskStatus.OPEN, HumanTaskStatus.CLAIMED)

# Which statuses each task status may move to. Anything not listed is refused.
TASK_TRANSITIONS: Final[Mapping[str, frozenset[str]]] = {
    HumanTaskStatus.OPEN: frozenset(
        {HumanTaskStatus.CLAIMED, HumanTaskStatus.EXPIRED, HumanTaskStatus.CANCELLED}
    ),
    HumanTaskStatus.CLAIMED: frozenset(
        {
            HumanTaskStatus.OPEN,  # released
            HumanTaskStatus.RESOLVED,
            HumanTaskStatus.EXPIRED,
            HumanTaskStatus.CANCELLED,
        }
    ),
    # Its failed job was retried or re-run, so the workflow waits for it again.
    HumanTaskStatus.CANCELLED: frozenset({HumanTaskStatus.OPEN}),
    HumanTaskStatus.RESOLVED: frozenset(),
    HumanTaskStatus.EXPIRED: frozenset(),
}


def task_sources_of(target: str) -> list[str]:
    """Return the statuses a human task may move to `target` from."""
    return [s for s, targets in TASK_TRANSITIONS.items() if target in targets]
