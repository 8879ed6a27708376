"""Middleware, activities and workflows for the HOTMESH_MIDDLEWARE tests.

Worker subprocesses import this module with `--import` (and name the middleware in
HOTMESH_MIDDLEWARE through the environment).
"""

from __future__ import annotations

import contextvars
import importlib.util
import inspect
import threading
from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import F

import hotmesh_django as hm
from hotmesh_django.handles import JobHandle
from hotmesh_django.middleware import ActivityCall, Middleware, StartCall, WorkflowCall
from tests.models import Counter

# The tenant a request (or an activity) works for, as a web app would keep it.
tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant", default=None)

# What the recording middleware saw, in order (appended from worker threads).
EVENTS: list[str] = []
_events_lock = threading.Lock()


def record(event: str) -> None:
    with _events_lock:
        EVENTS.append(event)


class TenantMiddleware(Middleware):
    """Carry the caller's tenant into every step: the main use case."""

    def start(self, call: StartCall, call_next: Callable[[StartCall], JobHandle]) -> JobHandle:
        current = tenant.get()
        if current is not None:
            call.headers["tenant"] = current
        return call_next(call)

    def execute_activity(self, call: ActivityCall, call_next: Callable[[ActivityCall], Any]) -> Any:
        token = tenant.set(call.headers.get("tenant"))
        try:
            return call_next(call)
        finally:
            tenant.reset(token)

    def execute_workflow(self, call: WorkflowCall, call_next: Callable[[WorkflowCall], Any]) -> Any:
        token = tenant.set(call.headers.get("tenant"))
        try:
            return call_next(call)
        finally:
            tenant.reset(token)


class _Recording(Middleware):
    label = ""

    def start(self, call: StartCall, call_next: Callable[[StartCall], JobHandle]) -> JobHandle:
        record(f"{self.label} start >")
        call.headers.setdefault("trail", []).append(self.label)
        try:
            return call_next(call)
        finally:
            record(f"{self.label} start <")

    def execute_activity(self, call: ActivityCall, call_next: Callable[[ActivityCall], Any]) -> Any:
        record(f"{self.label} activity >")
        try:
            return call_next(call)
        finally:
            record(f"{self.label} activity <")

    def execute_workflow(self, call: WorkflowCall, call_next: Callable[[WorkflowCall], Any]) -> Any:
        record(f"{self.label} workflow >")
        try:
            return call_next(call)
        finally:
            record(f"{self.label} workflow <")


class OuterMiddleware(_Recording):
    label = "outer"


class InnerMiddleware(_Recording):
    label = "inner"


class StartOnlyMiddleware(Middleware):
    """Overrides start() only, so it adds nothing around executions."""

    def start(self, call: StartCall, call_next: Callable[[StartCall], JobHandle]) -> JobHandle:
        call.headers["trace"] = "t-1"
        return call_next(call)


class CannedMiddleware(Middleware):
    """Answers `mw.count_call` itself, and refuses to enqueue while closed."""

    closed = False

    def start(self, call: StartCall, call_next: Callable[[StartCall], JobHandle]) -> JobHandle:
        if CannedMiddleware.closed:
            return JobHandle(call.workflow_id)  # nothing enqueued
        return call_next(call)

    def execute_activity(self, call: ActivityCall, call_next: Callable[[ActivityCall], Any]) -> Any:
        if call.name == "mw.count_call":
            return f"canned for {call.workflow_id}"
        return call_next(call)


class RefuseMiddleware(Middleware):
    """Placed after TenantMiddleware: it sees the header that one set."""

    def start(self, call: StartCall, call_next: Callable[[StartCall], JobHandle]) -> JobHandle:
        if call.headers.get("tenant") == "mallory":
            raise PermissionDenied("mallory may not start jobs")
        return call_next(call)


class RaiseAfterStartMiddleware(Middleware):
    """Raises after the job was written: the start must leave nothing behind."""

    def start(self, call: StartCall, call_next: Callable[[StartCall], JobHandle]) -> JobHandle:
        call_next(call)
        raise RuntimeError("audit log unavailable")


class FlakyMiddleware(Middleware):
    """Fails the first attempt of every activity; fails workflows told to."""

    def execute_activity(self, call: ActivityCall, call_next: Callable[[ActivityCall], Any]) -> Any:
        if call.attempt == 1:
            raise ConnectionError(f"middleware down for {call.name} attempt {call.attempt}")
        return call_next(call)

    def execute_workflow(self, call: WorkflowCall, call_next: Callable[[WorkflowCall], Any]) -> Any:
        if call.kwargs.get("fail"):
            raise LookupError(f"no tenant for {call.workflow_id}")
        return call_next(call)


class NeedsArguments(Middleware):
    def __init__(self, secret: str) -> None:
        self.secret = secret


class NotMiddleware:
    pass


not_a_class = TenantMiddleware()


# -- activities and workflows -------------------------------------------------------


def _seen() -> dict[str, Any]:
    return {"tenant": tenant.get(), "headers": dict(hm.headers())}


@hm.activity(name="mw.whoami")
def whoami() -> dict[str, Any]:
    return _seen()


@hm.activity(name="mw.whoami_timed", timeout=10)
def whoami_timed() -> dict[str, Any]:
    """Runs on a helper thread (it has a timeout): the tenant must follow it there."""
    return _seen()


@hm.activity(name="mw.spawn")
def spawn() -> str:
    """Start a job from inside an activity; it inherits this job's headers."""
    return whoami.start().id


@hm.activity(name="mw.count_call", retry=hm.RetryPolicy(max_attempts=2, initial_interval=0.05))
def count_call(key: str) -> str:
    Counter.objects.get_or_create(key=key)
    Counter.objects.filter(key=key).update(value=F("value") + 1)
    return "ran"


@hm.activity(name="mw.stack")
def stack() -> list[str]:
    """The modules on the stack between the worker and this activity."""
    return [frame.filename for frame in inspect.stack()]


@hm.workflow(name="mw.child")
def tenant_child() -> dict[str, Any]:
    return {"workflow": _seen(), "step": whoami()}


@hm.workflow(name="mw.flow")
def tenant_flow() -> dict[str, Any]:
    return {
        "workflow": _seen(),
        "step": whoami(),
        "timed": whoami_timed(),
        "child": tenant_child(),
        "spawned": spawn(),
    }


@hm.workflow(name="mw.loop")
def tenant_loop(n: int) -> dict[str, Any]:
    if n > 0:
        hm.continue_as_new(n - 1)
    return {"workflow": _seen(), "step": whoami()}


@hm.workflow(name="mw.retrying")
def retrying(key: str, fail: bool = False) -> str:
    return count_call(key)


@hm.workflow(name="mw.branch")
def tenant_branch() -> str:
    """Takes a different step per tenant, so a replay must see the same tenant."""
    if tenant.get() == "acme":
        whoami()
    else:
        whoami_timed()
    hm.wait_for_signal("done")
    return "done"


HAS_TASKS = importlib.util.find_spec("django.tasks") is not None

if HAS_TASKS:
    from django.tasks import task

    @task
    def seen_task() -> dict[str, Any]:
        """A Django 6 task run by HotMeshBackend: middleware wraps it too."""
        return _seen()
