"""Operations on jobs that real workers ran: retry, signal, re-run from a step, cancel."""

from __future__ import annotations

import pytest
from django.urls import reverse

import hotmesh_django as hm
from hotmesh_django.engine import control
from hotmesh_django.models import Activity, Job, JobStatus, Signal, StepKind
from tests.admin import defs

pytestmark = pytest.mark.django_db(transaction=True)


def job_of(handle: hm.JobHandle) -> Job:
    return Job.objects.get(workflow_id=handle.id)


def post(client, name: str, job: Job, data: dict | None = None):
    url = reverse(f"admin:hotmesh_django_job_{name}", args=[job.pk])
    return client.post(url, data or {}, follow=True)


def test_failed_job_retried_then_signalled_to_success(admin_client, drain) -> None:
    handle = defs.approval.using(workflow_id="flow-1").start("flow-1", 2)
    drain()
    job = job_of(handle)
    assert job.status == JobStatus.FAILED
    step = Activity.objects.get(job=job, seq=1)
    assert (step.status, step.attempts) == (JobStatus.FAILED, 2)
    page = admin_client.get(reverse("admin:hotmesh_django_job_change", args=[job.pk]))
    assert "flaky failure 2 of 2 for flow-1" in page.content.decode()

    post(admin_client, "retry", job)
    drain()
    assert handle.status() == JobStatus.WAITING
    page = admin_client.get(reverse("admin:hotmesh_django_job_change", args=[job.pk]))
    assert "Waiting for signal <code>approved</code>" in page.content.decode()

    post(admin_client, "signal", job, {"name": "approved", "payload": '{"by": "ops"}'})
    drain()
    assert handle.result(timeout=5) == {"receipt": "ok after 3 calls", "decision": {"by": "ops"}}
    assert job_of(handle).search == {"customer": "flow-1"}


def test_rerun_from_step_runs_the_step_again(admin_client, drain) -> None:
    handle = defs.approval.using(workflow_id="flow-2").start("flow-2", 0)
    drain()
    job = job_of(handle)
    assert job.status == JobStatus.WAITING
    post(admin_client, "rerun", job, {"step": "1"})
    drain()
    assert handle.status() == JobStatus.WAITING
    hm.signal(handle.id, "approved", True)
    drain()
    assert handle.result(timeout=5)["receipt"] == "ok after 2 calls"


def test_rerun_buffers_consumed_signals_again(drain) -> None:
    handle = defs.two_waits.using(workflow_id="flow-3").start()
    hm.signal(handle.id, "first", 1)
    drain()
    job = job_of(handle)
    assert job.status == JobStatus.WAITING
    assert Signal.objects.get(job=job, name="first").step == 1
    assert control.rerun_from_step(handle.id, 1, actor="test")
    assert Signal.objects.get(job=job, name="first").step is None
    drain()
    assert Signal.objects.get(job=job, name="first").step == 1
    hm.signal(handle.id, "second", 2)
    drain()
    assert handle.result(timeout=5) == [1, 2]


def test_rerun_of_an_activity_job_gives_a_fresh_retry_budget(drain) -> None:
    handle = defs.flaky.using(workflow_id="flow-4").start("flow-4", 3)
    drain()
    assert handle.status() == JobStatus.FAILED
    assert control.rerun_from_step(handle.id, 1)
    drain()
    assert handle.result(timeout=5) == "ok after 4 calls"


def test_failed_child_shows_in_parent_and_cancel_stops_the_tree(admin_client, drain) -> None:
    handle = defs.parent.using(workflow_id="flow-5").start(2)
    drain()
    parent = job_of(handle)
    assert parent.status == JobStatus.SUCCESSFUL
    children = list(parent.children.order_by("id"))
    assert len(children) == 2
    page = admin_client.get(reverse("admin:hotmesh_django_job_change", args=[parent.pk]))
    content = page.content.decode()
    for child in children:
        assert child.workflow_id in content
    assert Activity.objects.filter(job=parent, kind=StepKind.CHILD).count() == 2

    waiting = defs.approval.using(workflow_id="flow-6").start("flow-6", 0)
    drain()
    response = post(admin_client, "cancel", job_of(waiting))
    assert "1 job cancelled." in " ".join(str(m) for m in response.context["messages"])
    assert waiting.status() == JobStatus.CANCELLED


def test_failing_workflow_detail_shows_traceback(admin_client, drain) -> None:
    handle = defs.failing.using(workflow_id="flow-7").start("it broke")
    drain()
    job = job_of(handle)
    assert job.status == JobStatus.FAILED
    content = admin_client.get(
        reverse("admin:hotmesh_django_job_change", args=[job.pk])
    ).content.decode()
    assert '<pre class="hm-traceback">Traceback' in content
    assert "it broke" in content
    assert "hm-tl-failed" in content
