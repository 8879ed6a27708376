"""factory-boy factories for the admin tests: jobs in every state, and their rows."""

from __future__ import annotations

import datetime
import uuid

import factory
from django.utils import timezone

from hotmesh_django.models import (
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
    Worker,
)


class JobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Job

    workflow_id = factory.Sequence(lambda n: f"admin-job-{n}")
    name = "admin_tests.approval"
    kind = JobKind.WORKFLOW
    queue = "default"
    status = JobStatus.READY
    input = factory.LazyFunction(lambda: {"args": ["k", 0], "kwargs": {}})


class FailedJobFactory(JobFactory):
    status = JobStatus.FAILED
    started_at = factory.LazyFunction(lambda: timezone.now() - datetime.timedelta(seconds=5))
    finished_at = factory.LazyFunction(timezone.now)
    error = factory.LazyFunction(
        lambda: {
            "type": "RuntimeError",
            "message": "boom",
            "traceback": "Traceback (most recent call last):\nRuntimeError: boom\n",
        }
    )


class ActivityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Activity

    job = factory.SubFactory(JobFactory)
    seq = factory.Sequence(lambda n: n + 1)
    kind = StepKind.ACTIVITY
    name = "admin_tests.flaky"
    status = JobStatus.SUCCESSFUL
    attempts = 1
    input = factory.LazyFunction(lambda: {"args": ["k", 0], "kwargs": {}})


class JournalFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Journal

    job = factory.SubFactory(JobFactory)
    event = JournalEvent.CREATED
    name = "admin_tests.approval"


class StreamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Stream

    job = factory.SubFactory(JobFactory)
    queue = factory.SelfAttribute("job.queue")
    kind = StreamKind.TURN
    name = factory.SelfAttribute("job.name")
    status = StreamStatus.READY


class SignalFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Signal

    job = factory.SubFactory(JobFactory)
    name = "approved"
    payload = None


class WorkerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Worker

    id = factory.LazyFunction(uuid.uuid4)
    host = factory.Sequence(lambda n: f"host-{n}")
    pid = factory.Sequence(lambda n: 1000 + n)
    queues = factory.LazyFunction(lambda: ["default"])
    concurrency = 4
    in_flight = 0
