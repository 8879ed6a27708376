"""A Django tasks backend (Django 6+) that runs `@task` functions as hotmesh jobs.

    TASKS = {"default": {"BACKEND": "hotmesh_django.tasks.HotMeshBackend"}}

`my_task.enqueue(...)` then writes an activity job in the caller's transaction (so it
is rolled back with it) and `python manage.py hotmesh_worker` runs it. Every task job
runs the one activity registered here, `hotmesh.django_task`, whose input is the
task's module path and arguments: the worker imports the task when it runs it, so
task modules need not be listed in HOTMESH_IMPORTS. The worker must import this
module, though, to know that activity (`HotmeshConfig.ready` does).

How Django's options map onto a job:
- `priority` (-100..100) is the job's priority as is: higher runs first on its queue;
- `queue_name` is the job's queue (list non-default queues in the backend's QUEUES,
  or set `"QUEUES": []` to allow any);
- `run_after` becomes a start delay, counted from the moment of `enqueue()`;
- the result id is the job's workflow_id, so `hm.get_handle(result.id)` works too.

Django runs a task once: an exception it raises fails it for good. A task whose
worker died mid-run is run again (up to three attempts in all), as every hotmesh
activity is. `takes_context=True` tasks are refused.

On Django before 6.0, which has no `django.tasks`, this module imports cleanly but
the backend raises ImproperlyConfigured when Django instantiates it.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime
import re
import uuid
from collections.abc import Mapping, Sequence
from traceback import format_exception
from typing import TYPE_CHECKING, Any

import django
from django.apps import apps
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db.models import OuterRef, Subquery
from django.utils import timezone
from django.utils.module_loading import import_string

from hotmesh_django import exceptions as hm_exceptions
from hotmesh_django.definitions import RetryPolicy, activity

try:
    from django.tasks import task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task, TaskError, TaskResult, TaskResultStatus
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json
except ImportError:  # Django < 6.0
    DJANGO_TASKS = False
    BaseTaskBackend = object  # type: ignore[assignment,misc]
else:
    DJANGO_TASKS = True

if TYPE_CHECKING:
    from hotmesh_django.models import Job

# The name of the activity every task job runs. Stable: it is stored in each job.
TASK_ACTIVITY = "hotmesh.django_task"
# Search attribute holding the task's module path, so the admin can filter by task.
SEARCH_KEY = "django_task"

# An exception raised by the task fails it at once (Django's semantics); attempts
# above one happen only when a worker stopped mid-task and its lease expired.
TASK_RETRY = RetryPolicy(max_attempts=3, non_retryable=(BaseException,))

_MAX_QUEUE = 100


def _require_django_tasks() -> None:
    if not DJANGO_TASKS:
        raise ImproperlyConfigured(
            "hotmesh_django.tasks.HotMeshBackend needs Django 6.0 or later "
            f"(django.tasks); this is Django {django.get_version()}. "
            "Use @hm.activity with .start() instead."
        )


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _exception_class_path(error: Mapping[str, Any]) -> str:
    """Return the dotted path of the exception class an engine error dict describes.

    The engine stores the class name and the formatted traceback; the traceback's
    own "module.Qualname: message" line carries the module, except for builtins,
    which Python prints bare.
    """
    if error.get("class_path"):
        return str(error["class_path"])
    name = str(error.get("type") or "Exception")
    path = name
    pattern = re.compile(rf"^((?:[\w.]+\.)?{re.escape(name)})(?::|$)")
    for line in reversed(str(error.get("traceback") or "").splitlines()):
        match = pattern.match(line)
        if match:
            path = match.group(1)
            break
    if "." not in path:
        if isinstance(getattr(builtins, path, None), type):
            return f"builtins.{path}"
        if isinstance(getattr(hm_exceptions, path, None), type):
            return f"hotmesh_django.exceptions.{path}"
    return path


def _delay_seconds(run_after: datetime.datetime | None) -> float:
    if run_after is None:
        return 0.0
    return max(0.0, (run_after - timezone.now()).total_seconds())


def run_task(
    *,
    result_id: str,
    task: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    backend: str,
    run_after: datetime.datetime | None = None,
) -> Any:
    """Run the Django task at module path `task` (the worker side of HotMeshBackend).

    Send Django's task_started and task_finished signals around the call. They are
    sent before the worker records the outcome, so a receiver that reloads the
    result still sees it RUNNING. Raise whatever the task raised, and TypeError when
    its return value is not JSON.

    Its keyword arguments are the job's stored input, which get_result() reads; the
    call itself uses the result read back, so both see the same values.
    """
    _require_django_tasks()
    hm_backend = task_backends[backend]
    if not isinstance(hm_backend, HotMeshBackend):
        raise ImproperlyConfigured(
            f"Task backend {backend!r} is {_class_path(type(hm_backend))} in this "
            "worker, not hotmesh_django.tasks.HotMeshBackend: the worker and the "
            "process that enqueued the task disagree about TASKS."
        )
    result = hm_backend.get_result(result_id)
    sender = type(hm_backend)
    task_started.send(sender=sender, task_result=result)
    try:
        value = normalize_json(result.task.call(*result.args, **result.kwargs))
    except BaseException as exc:
        failed = dataclasses.replace(
            result,
            status=TaskResultStatus.FAILED,
            finished_at=timezone.now(),
            errors=[
                *result.errors,
                TaskError(
                    exception_class_path=_class_path(type(exc)),
                    traceback="".join(format_exception(exc)),
                ),
            ],
        )
        # Sent inside the handler, as Django's own backends do: its log receiver
        # reads sys.exc_info() for the traceback.
        task_finished.send(sender=sender, task_result=failed)
        raise
    finished = dataclasses.replace(
        result, status=TaskResultStatus.SUCCESSFUL, finished_at=timezone.now()
    )
    # TaskResult is frozen and `_return_value` is not an init field: Django's own
    # backends set it this way.
    object.__setattr__(finished, "_return_value", value)
    task_finished.send(sender=sender, task_result=finished)
    return value


if DJANGO_TASKS:
    activity(name=TASK_ACTIVITY, retry=TASK_RETRY)(run_task)


class HotMeshBackend(BaseTaskBackend):
    """Enqueue Django tasks as hotmesh jobs, run by `hotmesh_worker`."""

    supports_defer = True
    supports_async_task = True  # Task.call() runs a coroutine with async_to_sync.
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        _require_django_tasks()
        super().__init__(alias, params)

    def validate_task(self, task: Task[Any, Any]) -> None:
        """Raise InvalidTask unless this backend can run `task`.

        Django's rules, plus: no `takes_context`, and a queue name that fits a queue.
        """
        super().validate_task(task)
        if task.takes_context:
            raise InvalidTask(
                "HotMeshBackend does not support takes_context=True tasks: "
                "remove the context argument, or use @hm.activity."
            )
        queue = task.queue_name
        if not isinstance(queue, str) or not queue or len(queue) > _MAX_QUEUE:
            raise InvalidTask(
                f"queue_name must be a non-empty string of at most {_MAX_QUEUE} characters."
            )

    def enqueue(
        self, task: Task[Any, Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> TaskResult[Any, Any]:
        """Write a job that runs `task(*args, **kwargs)` and return its READY result.

        The job joins the caller's transaction. Raise InvalidTask for a task this
        backend cannot run, and TypeError (before writing anything) for arguments
        that are not JSON.
        """
        from hotmesh_django import registry
        from hotmesh_django.engine.start import start_job

        self.validate_task(task)
        result: TaskResult[Any, Any] = TaskResult(
            task=task,
            id=str(uuid.uuid4()),
            status=TaskResultStatus.READY,
            enqueued_at=None,
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=list(args),  # normalized to JSON (or TypeError) by TaskResult
            kwargs=dict(kwargs),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        definition = registry.get_activity(TASK_ACTIVITY).using(
            workflow_id=result.id,
            queue=task.queue_name,
            priority=task.priority,
            delay=_delay_seconds(task.run_after),
            search={SEARCH_KEY: task.module_path},
        )
        # start_job, not definition.start(): inside a workflow, start() would make a
        # step of that workflow rather than a job of its own.
        start_job(
            definition,
            (),
            {
                "result_id": result.id,
                "task": task.module_path,
                "args": result.args,
                "kwargs": result.kwargs,
                "backend": self.alias,
                "run_after": task.run_after,
            },
        )
        object.__setattr__(result, "enqueued_at", timezone.now())
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult[Any, Any]:
        """Return the TaskResult of the task job `result_id`, read from the database.

        Statuses map as READY → READY, RUNNING and WAITING → RUNNING, SUCCESSFUL →
        SUCCESSFUL, FAILED and CANCELLED → FAILED. Raise TaskResultDoesNotExist when
        no task job has that id, and InvalidTask when its task cannot be imported.
        """
        job = self._job(result_id)
        return self._to_result(job)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        messages: list[checks.CheckMessage] = list(super().check(**kwargs))
        if not apps.is_installed("hotmesh_django"):
            messages.append(
                checks.Error(
                    f"Task backend {self.alias!r} is HotMeshBackend, but hotmesh_django is "
                    "not in INSTALLED_APPS.",
                    hint='Add "hotmesh_django" to INSTALLED_APPS.',
                    id="hotmesh.E101",
                )
            )
        return messages

    # -- reading a job back ------------------------------------------------------------

    def _job(self, result_id: str) -> Job:
        from hotmesh_django.models import Activity, Job, Stream, StreamStatus

        if not isinstance(result_id, str) or not result_id:
            raise TaskResultDoesNotExist(result_id)
        step = Activity.objects.filter(job=OuterRef("pk"), seq=1)
        lease = Stream.objects.filter(job=OuterRef("pk"), status=StreamStatus.RUNNING)
        job = (
            Job.objects.filter(workflow_id=result_id, name=TASK_ACTIVITY)
            .annotate(
                step_attempts=Subquery(step.values("attempts")[:1]),
                step_started_at=Subquery(step.values("started_at")[:1]),
                lease_worker=Subquery(lease.values("worker")[:1]),
            )
            .first()
        )
        if job is None:
            raise TaskResultDoesNotExist(result_id)
        return job

    def _task(self, path: str, job: Job, run_after: datetime.datetime | None) -> Task[Any, Any]:
        try:
            found = import_string(path)
        except ImportError as exc:
            raise InvalidTask(
                f"Result {job.workflow_id!r} is for task {path!r}, which cannot be imported: {exc}"
            ) from exc
        if not isinstance(found, Task):
            raise InvalidTask(
                f"Result {job.workflow_id!r} is for {path!r}, which is no longer a Task."
            )
        try:
            # The task as enqueued: with this job's priority, queue and run_after.
            return dataclasses.replace(
                found,
                priority=job.priority,
                queue_name=job.queue,
                run_after=run_after,
                backend=self.alias,
            )
        except InvalidTask:
            # Settings changed since (QUEUES, say): report the task as defined now
            # rather than make an old result unreadable.
            return found

    def _to_result(self, job: Job) -> TaskResult[Any, Any]:
        from hotmesh_django.models import JobStatus
        from hotmesh_django.serialization import decode_call, from_json, readable

        _, call = decode_call(job.input)
        task = self._task(str(call.get("task", "")), job, call.get("run_after"))
        status = {
            JobStatus.READY: TaskResultStatus.READY,
            JobStatus.RUNNING: TaskResultStatus.RUNNING,
            JobStatus.WAITING: TaskResultStatus.RUNNING,
            JobStatus.SUCCESSFUL: TaskResultStatus.SUCCESSFUL,
            JobStatus.FAILED: TaskResultStatus.FAILED,
            JobStatus.CANCELLED: TaskResultStatus.FAILED,
        }[JobStatus(job.status)]
        errors = []
        if job.status == JobStatus.CANCELLED and not job.error:
            errors.append(
                TaskError(
                    exception_class_path=_class_path(hm_exceptions.JobCancelled),
                    traceback="The job was cancelled.",
                )
            )
        elif job.error and status == TaskResultStatus.FAILED:
            error = readable(job.error)
            errors.append(
                TaskError(
                    exception_class_path=_exception_class_path(error),
                    traceback=error.get("traceback")
                    or f"{error.get('type', '')}: {error.get('message', '')}",
                )
            )
        # The engine does not record which worker ran a past attempt: those entries
        # are empty, so `attempts` (the list's length) stays right.
        attempts = getattr(job, "step_attempts", None) or 0
        worker_ids = [""] * attempts
        lease_worker = getattr(job, "lease_worker", None)
        if lease_worker is not None and attempts:
            worker_ids[-1] = str(lease_worker)
        result: TaskResult[Any, Any] = TaskResult(
            task=task,
            id=job.workflow_id,
            status=status,
            enqueued_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            last_attempted_at=getattr(job, "step_started_at", None),
            args=call.get("args", []),
            kwargs=call.get("kwargs", {}),
            backend=self.alias,
            errors=errors,
            worker_ids=worker_ids,
        )
        if status == TaskResultStatus.SUCCESSFUL:
            # Frozen dataclass, non-init field: set as Django's backends do.
            object.__setattr__(result, "_return_value", from_json(job.output))
        return result
