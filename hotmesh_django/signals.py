"""Django signals for a job's start and end, for code that reacts to them.

These are Django's own signals (django.dispatch), not a workflow's signals (the
Signal model, hm.signal): connect a receiver the usual way::

    from django.dispatch import receiver
    from hotmesh_django.signals import job_finished

    @receiver(job_finished)
    def on_job_finished(sender, job_id, name, status, **kwargs):
        ...

`sender` is the Job model. job_started is sent once per job; job_finished each time
a job reaches a final status: again after an operator retries it, and for every run
of a workflow that continues as new (each run is a job of its own). Each is sent in
the process that made the change (the caller's for job_started, a worker's or the
admin's for job_finished), after the transaction that made it commits: a receiver
sees the row as committed, and a rolled-back start sends nothing. A receiver that
raises is logged by Django (send_robust) and changes nothing in the engine.
Receivers run on the engine's thread: keep them short, or start an activity from
them. With a job_finished receiver connected, each end costs one query more (its
workflow_id); with none, nothing.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from django.db import transaction
from django.dispatch import Signal

from hotmesh_django import metrics

if TYPE_CHECKING:
    from hotmesh_django.models import Job

# Sent with job_id (the Job's primary key), workflow_id, name (the definition's
# name) and queue.
job_started = Signal()
# Sent with job_id, workflow_id, name and status (SUCCESSFUL, FAILED or CANCELLED).
job_finished = Signal()


def started(*, job_id: int, workflow_id: str, name: str, queue: str) -> None:
    """Count a job that was created, and send job_started (call after commit)."""
    metrics.job_started(name, queue)
    from hotmesh_django.models import Job

    job_started.send_robust(
        sender=Job, job_id=job_id, workflow_id=workflow_id, name=name, queue=queue
    )


def started_on_commit(job: Job) -> None:
    """started() for `job`, a row this transaction created, once it commits."""
    transaction.on_commit(
        functools.partial(
            started, job_id=job.pk, workflow_id=job.workflow_id, name=job.name, queue=job.queue
        )
    )


def finished(*, job_id: int, name: str, status: str) -> None:
    """Count a job that ended, and send job_finished (call after commit)."""
    metrics.job_finished(name, status)
    from hotmesh_django.models import Job

    if not job_finished.receivers:
        return  # the hot path (every ack): no receiver, no lookup
    # Read here, not carried by every finish path's statement: it costs a query only
    # where someone listens.
    workflow_id = Job.objects.filter(pk=job_id).values_list("workflow_id", flat=True).first()
    job_finished.send_robust(
        sender=Job, job_id=job_id, workflow_id=workflow_id, name=name, status=str(status)
    )
