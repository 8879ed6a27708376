"""Handles to jobs (`JobHandle`) and, inside a workflow, to steps (`StepHandle`)."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from django.db import DEFAULT_DB_ALIAS

from hotmesh_django.exceptions import JobCancelled, JobNotFound, WorkflowFailed

if TYPE_CHECKING:
    from hotmesh_django.context import WorkflowContext
    from hotmesh_django.models import Job, JobStatus


class JobHandle:
    """A reference to a job by its workflow_id."""

    def __init__(self, workflow_id: str, *, using: str = DEFAULT_DB_ALIAS) -> None:
        self.id = workflow_id
        self._using = using

    def __repr__(self) -> str:
        return f"<JobHandle {self.id!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def job(self) -> Job:
        """Return the Job row, fresh from the database."""
        from hotmesh_django.models import Job

        try:
            return Job.objects.using(self._using).get(workflow_id=self.id)
        except Job.DoesNotExist:
            raise JobNotFound(f"No job has workflow_id {self.id!r}.") from None

    def status(self) -> JobStatus:
        """Return the job's current JobStatus."""
        from hotmesh_django.models import Job, JobStatus

        row = (
            Job.objects.using(self._using)
            .filter(workflow_id=self.id)
            .values_list("status", flat=True)
            .first()
        )
        if row is None:
            raise JobNotFound(f"No job has workflow_id {self.id!r}.")
        return JobStatus(row)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job to finish and return its output.

        Raise WorkflowFailed (JobCancelled for a cancelled job) with the error's type
        and message, or TimeoutError when `timeout` seconds pass first. Wakes on the
        completion NOTIFY, with a slow poll underneath in case one is missed.
        """
        from hotmesh_django.engine.notify import wait_for_job
        from hotmesh_django.models import JobStatus
        from hotmesh_django.serialization import from_json, readable

        deadline = None if timeout is None else time.monotonic() + _check_timeout(timeout)
        job = wait_for_job(self.id, deadline=deadline, using=self._using)
        if job is None:
            raise TimeoutError(f"Job {self.id!r} did not finish within {timeout} seconds.")
        if job.status == JobStatus.SUCCESSFUL:
            return from_json(job.output)
        error = readable(job.error) or {}
        cls = JobCancelled if job.status == JobStatus.CANCELLED else WorkflowFailed
        raise cls(
            f"Job {self.id!r} {job.status.lower()}: {error.get('type', '')}: "
            f"{error.get('message', '')}",
            error_type=error.get("type", ""),
            error_message=error.get("message", ""),
            traceback=error.get("traceback", ""),
        )

    def state(self) -> dict[str, Any]:
        """Return the values the workflow published with hm.set_state()."""
        from hotmesh_django.models import Job
        from hotmesh_django.serialization import from_json

        row = (
            Job.objects.using(self._using)
            .filter(workflow_id=self.id)
            .values_list("state", flat=True)
            .first()
        )
        if row is None:
            raise JobNotFound(f"No job has workflow_id {self.id!r}.")
        return from_json(row)  # type: ignore[no-any-return]

    def query(self, name: str, default: Any = None) -> Any:
        """Return one published state value (`default` when it was never set)."""
        return self.state().get(name, default)

    def signal(self, name: str, payload: Any = None) -> None:
        """Send signal `name` with `payload` to the job; it is buffered until taken."""
        from hotmesh_django import context
        from hotmesh_django.engine.control import send_signal

        # Both check the name before any SQL: a name Postgres cannot store would
        # abort the caller's transaction with a DataError.
        ctx = context.current()
        if ctx is not None:
            # From workflow code, which runs again on every replay: sent once, with
            # the turn's write (a step records it).
            ctx.send_signal(self.id, name, payload)
            return
        send_signal(self.id, name, payload, using=self._using)

    def cancel(self) -> bool:
        """Cancel the job and its children. Return False if it had already finished."""
        from hotmesh_django.engine.control import cancel_job

        return cancel_job(self.id, using=self._using)

    def journal(self) -> list[dict[str, Any]]:
        """Return the job's history as a list of events, oldest first."""
        from hotmesh_django.models import Journal
        from hotmesh_django.serialization import readable

        job = self.job()
        return [
            {
                "seq": i,
                "event": e.event,
                "step": e.step,
                "name": e.name,
                "attempt": e.attempt,
                "data": readable(e.data),
                "created_at": e.created_at,
            }
            for i, e in enumerate(
                Journal.objects.using(self._using).filter(job=job).order_by("id"), start=1
            )
        ]

    def activities(self) -> list[dict[str, Any]]:
        """Return the job's steps in order, with their status, attempts and outcome."""
        from hotmesh_django.models import Activity
        from hotmesh_django.serialization import from_json, readable

        job = self.job()
        return [
            {
                "seq": a.seq,
                "kind": a.kind,
                "name": a.name,
                "status": a.status,
                "attempts": a.attempts,
                "input": from_json(a.input),
                "output": from_json(a.output),
                "error": readable(a.error),
                "started_at": a.started_at,
                "finished_at": a.finished_at,
            }
            for a in Activity.objects.using(self._using).filter(job=job).order_by("seq")
        ]


class StepHandle:
    """A step started inside a workflow with `.start()`, for `hm.gather`."""

    def __init__(self, ctx: WorkflowContext, seq: int) -> None:
        self._ctx = ctx
        self.seq = seq

    def __repr__(self) -> str:
        return f"<StepHandle step={self.seq}>"

    def result(self) -> Any:
        """Return the step's result, raise its error, or suspend the workflow."""
        return self._ctx.resolve(self.seq)


def _check_timeout(timeout: object) -> float:
    # NaN makes a deadline no comparison passes (a wait forever); a string fails
    # deep inside the wait with an unrelated TypeError.
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}.")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout must be a number of seconds >= 0, not {timeout!r}.")
    return float(timeout)


def get_handle(workflow_id: str, *, using: str = DEFAULT_DB_ALIAS) -> JobHandle:
    """Return a handle to the job `workflow_id`; raise JobNotFound if there is none."""
    from hotmesh_django.models import Job

    if not Job.objects.using(using).filter(workflow_id=workflow_id).exists():
        raise JobNotFound(f"No job has workflow_id {workflow_id!r}.")
    return JobHandle(workflow_id, using=using)


def signal(
    workflow_id: str, name: str, payload: Any = None, *, using: str = DEFAULT_DB_ALIAS
) -> None:
    """Send signal `name` with `payload` to the job `workflow_id`."""
    JobHandle(workflow_id, using=using).signal(name, payload)
