"""HotMeshBackend: Django 6 `@task` functions enqueued as jobs and run by our worker.

Checked against what Django documents for task backends: TaskResult fields and
statuses, get_result / refresh, the enqueue, started and finished signals,
validate_task's rules, and the supports_* flags.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

import hotmesh_django as hm
from hotmesh_django import registry
from hotmesh_django.models import Job, JobStatus, Stream, StreamStatus
from hotmesh_django.tasks import TASK_ACTIVITY, HotMeshBackend, _exception_class_path
from tests.conftest import InProcessWorker, wait_until
from tests.models import Counter

HAS_TASKS = importlib.util.find_spec("django.tasks") is not None

if HAS_TASKS:
    from asgiref.sync import async_to_sync
    from django.tasks import TaskResult, TaskResultStatus, default_task_backend, task_backends
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist, TaskResultMismatch
    from django.tasks.signals import task_enqueued, task_finished, task_started

    from tests import tasks_defs as d

pytestmark = pytest.mark.django_db(transaction=True)
needs_tasks = pytest.mark.skipif(not HAS_TASKS, reason="django.tasks needs Django 6+")

QUEUES = ["default", "other", "high"]


@pytest.fixture(autouse=True)
def hotmesh_tasks(settings: Any) -> None:
    settings.TASKS = {
        "default": {"BACKEND": "hotmesh_django.tasks.HotMeshBackend", "QUEUES": QUEUES}
    }


def finish(result: TaskResult, timeout: float = 10.0) -> TaskResult:
    """Wait until the task's job has finished, then refresh `result` and return it."""
    with contextlib.suppress(hm.WorkflowFailed):
        hm.get_handle(result.id).result(timeout=timeout)
    result.refresh()
    return result


def counter(key: str) -> int:
    row = Counter.objects.filter(key=key).first()
    return row.value if row else 0


# -- Django before 6.0 ---------------------------------------------------------------


@pytest.mark.skipif(HAS_TASKS, reason="checks the guard for Django < 6")
def test_backend_on_django_before_6_says_what_is_needed() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"needs Django 6\.0 or later"):
        HotMeshBackend("default", {})
    assert not registry.has_activity(TASK_ACTIVITY)


# -- the backend itself --------------------------------------------------------------


@needs_tasks
def test_backend_is_configured_from_tasks_setting() -> None:
    backend = task_backends["default"]
    assert isinstance(backend, HotMeshBackend)
    assert backend.supports_defer and backend.supports_get_result
    assert backend.supports_priority and backend.supports_async_task
    assert backend.queues == set(QUEUES)
    assert list(backend.check()) == []
    assert registry.has_activity(TASK_ACTIVITY)


@needs_tasks
def test_enqueue_returns_a_ready_result_and_writes_a_job() -> None:
    before = timezone.now()
    result = d.add.enqueue(2, b=3)
    assert isinstance(result, TaskResult)
    assert result.status == TaskResultStatus.READY
    assert result.task == d.add and result.backend == "default"
    assert result.args == [2] and result.kwargs == {"b": 3}
    assert result.enqueued_at is not None and result.enqueued_at >= before
    assert result.started_at is None and result.finished_at is None
    assert result.errors == [] and result.worker_ids == [] and result.attempts == 0
    assert not result.is_finished
    with pytest.raises(ValueError, match="not finished"):
        _ = result.return_value

    job = Job.objects.get(workflow_id=result.id)
    assert job.name == TASK_ACTIVITY and job.kind == "ACTIVITY"
    assert job.queue == "default" and job.priority == 0 and job.status == JobStatus.READY
    assert job.search == {"django_task": "tests.tasks_defs.add"}
    assert Stream.objects.get(job=job).status == StreamStatus.READY

    stored = default_task_backend.get_result(result.id)
    assert stored.status == TaskResultStatus.READY
    assert stored.task.func is d.add.func and stored.args == [2] and stored.kwargs == {"b": 3}


@needs_tasks
def test_worker_runs_the_task_and_get_result_is_successful(worker: InProcessWorker) -> None:
    result = d.add.enqueue(2, 3)
    finish(result)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.is_finished and result.return_value == 5
    assert result.errors == []
    assert result.attempts == 1 and result.worker_ids == [""]
    assert result.enqueued_at <= result.started_at <= result.last_attempted_at  # type: ignore[operator]
    assert result.last_attempted_at <= result.finished_at  # type: ignore[operator]

    fresh = d.add.get_result(result.id)
    assert fresh.status == TaskResultStatus.SUCCESSFUL and fresh.return_value == 5
    # The job is a plain hotmesh job too.
    assert hm.get_handle(result.id).result(timeout=1) == 5


@needs_tasks
def test_json_arguments_and_return_values_round_trip(worker: InProcessWorker) -> None:
    result = d.echo.enqueue(1, (2, 3), "x", flag=True, nested={"a": [None, 1.5]})
    assert result.args == [1, [2, 3], "x"]  # tuples become lists, as Django documents
    finish(result)
    assert result.return_value == {
        "args": [1, [2, 3], "x"],
        "kwargs": {"flag": True, "nested": {"a": [None, 1.5]}},
    }


@needs_tasks
def test_async_task_runs(worker: InProcessWorker) -> None:
    result = d.async_add.enqueue(4, 5)
    assert finish(result).return_value == 9


@needs_tasks
def test_aenqueue_and_aget_result() -> None:
    result = async_to_sync(d.add.aenqueue)(1, 1)
    fetched = async_to_sync(d.add.aget_result)(result.id)
    assert fetched.id == result.id and fetched.status == TaskResultStatus.READY


# -- priority, queues, run_after -----------------------------------------------------


@needs_tasks
def test_higher_priority_runs_first(start_worker: Callable[..., InProcessWorker]) -> None:
    low = d.record.using(priority=-100).enqueue("low")
    mid = d.record.enqueue("mid")
    high = d.record.using(priority=100).enqueue("high")
    assert Job.objects.get(workflow_id=high.id).priority == 100
    assert Job.objects.get(workflow_id=low.id).priority == -100
    start_worker(concurrency=1)
    for result in (low, mid, high):
        assert finish(result).status == TaskResultStatus.SUCCESSFUL
    order = list(Counter.objects.order_by("id").values_list("key", flat=True))
    assert order == ["high", "mid", "low"]


@needs_tasks
def test_queue_name_routes_to_that_queue(start_worker: Callable[..., InProcessWorker]) -> None:
    start_worker(queues=["default"])
    elsewhere = d.record.using(queue_name="other").enqueue("other")
    here = d.record.enqueue("here")
    assert Job.objects.get(workflow_id=elsewhere.id).queue == "other"
    assert finish(here).status == TaskResultStatus.SUCCESSFUL
    assert default_task_backend.get_result(elsewhere.id).status == TaskResultStatus.READY
    assert counter("other") == 0

    start_worker(queues=["other"])
    assert finish(elsewhere).status == TaskResultStatus.SUCCESSFUL
    assert elsewhere.task.queue_name == "other"


@needs_tasks
def test_unknown_queue_name_is_invalid() -> None:
    with pytest.raises(InvalidTask, match="Queue 'nope' is not valid for backend"):
        d.record.using(queue_name="nope")
    assert not Job.objects.exists()


@needs_tasks
def test_run_after_delays_the_task(worker: InProcessWorker) -> None:
    run_after = timezone.now() + datetime.timedelta(seconds=1.5)
    result = d.record.using(run_after=run_after).enqueue("later")
    assert result.task.run_after == run_after
    assert Stream.objects.get(job__workflow_id=result.id).status == StreamStatus.SCHEDULED
    wait_until(lambda: timezone.now() > run_after - datetime.timedelta(seconds=0.7))
    assert default_task_backend.get_result(result.id).status == TaskResultStatus.READY
    assert counter("later") == 0
    finish(result)
    assert result.status == TaskResultStatus.SUCCESSFUL
    # Database and test clocks are one host's; allow for the transaction's now().
    assert result.started_at >= run_after - datetime.timedelta(seconds=0.1)  # type: ignore[operator]
    assert result.task.run_after == run_after  # get_result reports the task as enqueued


@needs_tasks
def test_run_after_in_the_past_runs_at_once(worker: InProcessWorker) -> None:
    result = d.add.using(run_after=timezone.now() - datetime.timedelta(hours=1)).enqueue(1, 2)
    assert Stream.objects.get(job__workflow_id=result.id).status == StreamStatus.READY
    assert finish(result).return_value == 3


# -- failures ------------------------------------------------------------------------


@needs_tasks
def test_exception_fails_the_task_once_with_its_class_path(worker: InProcessWorker) -> None:
    result = d.explode.enqueue("kaboom")
    finish(result)
    assert result.status == TaskResultStatus.FAILED and result.is_finished
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value
    [error] = result.errors
    assert error.exception_class_path == "tests.tasks_defs.Boom"
    assert error.exception_class is d.Boom
    assert "kaboom" in error.traceback and "Traceback" in error.traceback
    assert counter("explode:kaboom") == 1  # Django runs a task once: no retry
    assert result.attempts == 1


@needs_tasks
def test_builtin_exception_class_path(worker: InProcessWorker) -> None:
    result = finish(d.divide.enqueue(1, 0))
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class_path == "builtins.ZeroDivisionError"
    assert result.errors[0].exception_class is ZeroDivisionError


@needs_tasks
def test_non_json_return_value_fails_the_task(worker: InProcessWorker) -> None:
    result = finish(d.bad_return.enqueue())
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class is TypeError


@needs_tasks
def test_non_json_arguments_are_refused_before_writing() -> None:
    with pytest.raises(TypeError, match="Unsupported type"):
        d.echo.enqueue(object())
    with pytest.raises(TypeError, match="Unsupported type"):
        d.echo.enqueue(when=datetime.date(2026, 1, 1))
    assert not Job.objects.exists()


@needs_tasks
def test_cancelled_job_reads_as_failed() -> None:
    result = d.add.enqueue(1, 2)
    assert hm.get_handle(result.id).cancel()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class is hm.JobCancelled


@needs_tasks
def test_waiting_and_running_jobs_read_as_running() -> None:
    result = d.add.enqueue(1, 2)
    for status in (JobStatus.RUNNING, JobStatus.WAITING):
        Job.objects.filter(workflow_id=result.id).update(status=status)
        assert default_task_backend.get_result(result.id).status == TaskResultStatus.RUNNING


def test_exception_class_path_from_stored_errors() -> None:
    tb = "Traceback (most recent call last):\n  ...\nshop.errors.Outer.Inner: no\nnote\n"
    assert _exception_class_path({"type": "Inner", "traceback": tb}) == "shop.errors.Outer.Inner"
    assert _exception_class_path({"type": "KeyError", "traceback": "KeyError: 'x'"}) == (
        "builtins.KeyError"
    )
    assert _exception_class_path({"type": "UnknownDefinition", "message": "m"}) == (
        "hotmesh_django.exceptions.UnknownDefinition"
    )
    assert _exception_class_path({"type": "X", "class_path": "a.b.X"}) == "a.b.X"


# -- Django's documented contract ----------------------------------------------------


@needs_tasks
def test_get_result_of_an_unknown_id_does_not_exist() -> None:
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("no-such-result")
    with pytest.raises(TaskResultDoesNotExist):
        d.add.get_result("no-such-result")


@needs_tasks
def test_get_result_of_a_plain_hotmesh_job_does_not_exist() -> None:
    from tests import activities as a

    handle = a.add.start(1, 2)
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(handle.id)


@needs_tasks
def test_get_result_through_another_task_is_a_mismatch() -> None:
    result = d.add.enqueue(1, 2)
    with pytest.raises(TaskResultMismatch):
        d.record.get_result(result.id)


@needs_tasks
def test_enqueue_joins_the_callers_transaction() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        result = d.add.enqueue(1, 2)
        raise RuntimeError("roll back")
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(result.id)


@pytest.fixture
def signals() -> Iterator[list[tuple[str, TaskResultStatus]]]:
    seen: list[tuple[str, TaskResultStatus]] = []

    def receiver(name: str) -> Callable[..., None]:
        def receive(sender: type, task_result: TaskResult, **kwargs: Any) -> None:
            assert sender is HotMeshBackend
            seen.append((name, task_result.status))

        return receive

    handlers = {
        task_enqueued: receiver("enqueued"),
        task_started: receiver("started"),
        task_finished: receiver("finished"),
    }
    for signal, handler in handlers.items():
        signal.connect(handler)
    yield seen
    for signal, handler in handlers.items():
        signal.disconnect(handler)


@needs_tasks
def test_signals_are_sent_around_a_run(
    signals: list[tuple[str, TaskResultStatus]], worker: InProcessWorker
) -> None:
    finish(d.add.enqueue(1, 2))
    finish(d.explode.enqueue("signals"))
    assert signals == [
        ("enqueued", TaskResultStatus.READY),
        ("started", TaskResultStatus.RUNNING),
        ("finished", TaskResultStatus.SUCCESSFUL),
        ("enqueued", TaskResultStatus.READY),
        ("started", TaskResultStatus.RUNNING),
        ("finished", TaskResultStatus.FAILED),
    ]


@needs_tasks
def test_validate_task_follows_djangos_rules() -> None:
    from django.tasks import task

    with pytest.raises(InvalidTask, match="priority must be a whole number"):
        d.add.using(priority=101)
    with pytest.raises(InvalidTask, match="does not support takes_context"):
        task(takes_context=True)(d.with_context)
    with pytest.raises(InvalidTask, match="run_after must be an aware datetime"):
        d.add.using(run_after=datetime.datetime(2030, 1, 1))
    assert not Job.objects.exists()


@needs_tasks
def test_nested_function_is_refused() -> None:
    from django.tasks import task

    with pytest.raises(InvalidTask, match="module level"):

        @task
        def nested() -> None:  # pragma: no cover - never runs
            pass


@needs_tasks
def test_queue_restriction_can_be_lifted(settings: Any, worker: InProcessWorker) -> None:
    settings.TASKS = {"default": {"BACKEND": "hotmesh_django.tasks.HotMeshBackend", "QUEUES": []}}
    result = d.add.using(queue_name="anything-goes").enqueue(2, 2)
    assert finish(result).return_value == 4


@needs_tasks
def test_queue_name_longer_than_a_queue_is_invalid(settings: Any) -> None:
    settings.TASKS = {"default": {"BACKEND": "hotmesh_django.tasks.HotMeshBackend", "QUEUES": []}}
    with pytest.raises(InvalidTask, match="at most 100 characters"):
        d.add.using(queue_name="q" * 101)


@needs_tasks
def test_result_of_a_task_that_no_longer_imports_is_invalid() -> None:
    result = d.add.enqueue(1, 2)
    job = Job.objects.get(workflow_id=result.id)
    job.input["kwargs"]["task"] = "tests.tasks_defs.gone"
    Job.objects.filter(pk=job.pk).update(input=job.input)
    with pytest.raises(InvalidTask, match="cannot be imported"):
        default_task_backend.get_result(result.id)


@needs_tasks
def test_result_stays_readable_after_its_queue_is_removed_from_settings(settings: Any) -> None:
    result = d.add.using(queue_name="other").enqueue(1, 2)
    settings.TASKS = {"default": {"BACKEND": "hotmesh_django.tasks.HotMeshBackend"}}
    fetched = default_task_backend.get_result(result.id)
    assert fetched.id == result.id and fetched.task.func is d.add.func


@needs_tasks
def test_check_reports_a_missing_app(monkeypatch: pytest.MonkeyPatch) -> None:
    from hotmesh_django import tasks

    monkeypatch.setattr(tasks.apps, "is_installed", lambda name: False)
    [error] = default_task_backend.check()
    assert error.id == "hotmesh.E101"


@needs_tasks
def test_worker_with_a_different_tasks_setting_says_so(settings: Any) -> None:
    from hotmesh_django.tasks import run_task

    result = d.add.enqueue(1, 2)
    settings.TASKS = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}
    with pytest.raises(ImproperlyConfigured, match="disagree about TASKS"):
        run_task(
            result_id=result.id, task=d.add.module_path, args=[1, 2], kwargs={}, backend="default"
        )
