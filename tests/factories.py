"""factory-boy factories for the engine's tables."""

from __future__ import annotations

import factory

from hotmesh_django.models import Activity, Job, JobStatus, Stream, StreamKind, StreamStatus


class JobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Job

    workflow_id = factory.Sequence(lambda n: f"job-{n}")
    name = "t.three_steps"
    queue = "default"
    status = JobStatus.READY
    input = factory.LazyFunction(lambda: {"args": [1], "kwargs": {}})


class ActivityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Activity

    job = factory.SubFactory(JobFactory)
    seq = factory.Sequence(lambda n: n + 1)
    name = "t.add"
    input = factory.LazyFunction(lambda: {"args": [1, 2], "kwargs": {}})


class StreamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Stream

    job = factory.SubFactory(JobFactory)
    queue = "default"
    kind = StreamKind.TURN
    name = factory.SelfAttribute("job.name")
    status = StreamStatus.READY
