"""Middleware: code that wraps every start, activity run and workflow turn.

`HOTMESH_MIDDLEWARE` lists classes by dotted path, outermost first, as Django's
MIDDLEWARE does. Each subclasses `Middleware` and overrides any of three hooks; each
hook gets a small description of the call and `call_next`, the rest of the chain:

- `start(call, call_next)` runs in the caller's process around `.start()` of a
  workflow or activity (and schedules, Django tasks, `signal_with_start`). It may
  put JSON values into `call.headers`; they are stored inside the job's call payload.
- `execute_activity(call, call_next)` runs on the worker around each attempt.
- `execute_workflow(call, call_next)` runs on the worker around each turn (replay).

Headers travel with the job: steps and child workflows started by a workflow, and
jobs started from inside an activity, inherit them. `headers()` returns the current
ones inside an activity or workflow.

The chain is built once per process and rebuilt when the setting changes (Django's
`setting_changed`, which `override_settings` sends). A hook no middleware overrides
is an empty tuple, so with no middleware the engine calls user code directly.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect
import threading
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from hotmesh_django.conf import settings

if TYPE_CHECKING:
    from hotmesh_django.definitions import ActivityDefinition, WorkflowDefinition
    from hotmesh_django.handles import JobHandle

EMPTY: Mapping[str, Any] = MappingProxyType({})

# The headers of the activity attempt or workflow turn running in this context. A
# ContextVar rather than a thread-local: an activity with a timeout runs on a
# helper thread, and the wrapper sets it there.
_current: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "hotmesh_headers", default=EMPTY
)


def headers() -> Mapping[str, Any]:
    """Return the headers of the running activity or workflow (read-only).

    Empty outside one, and for jobs started without headers.
    """
    return _current.get()


@dataclasses.dataclass(frozen=True, kw_only=True)
class StartCall:
    """A `.start()` on its way to the database.

    The `args`, `kwargs` and `headers` of the call that reaches the end of the chain
    are what is stored (pass `dataclasses.replace(call, ...)` to `call_next` to change
    args or kwargs); the other fields describe the start.
    """

    definition: ActivityDefinition[Any, Any] | WorkflowDefinition[Any, Any]
    name: str
    kind: Literal["activity", "workflow"]
    workflow_id: str
    queue: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    # JSON values to store with the job. Starts as a copy of the current job's
    # headers when called from inside an activity, else empty.
    headers: dict[str, Any]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ActivityCall:
    """One attempt of an activity on a worker."""

    name: str
    job_id: int
    step: int | None
    attempt: int
    queue: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    headers: Mapping[str, Any]

    @functools.cached_property
    def workflow_id(self) -> str:
        """The job's workflow_id, read on first use (most middleware never asks)."""
        from hotmesh_django.models import Job

        return str(Job.objects.values_list("workflow_id", flat=True).get(pk=self.job_id))


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkflowCall:
    """One turn of a workflow on a worker: the function replayed from the top."""

    name: str
    workflow_id: str
    queue: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    headers: Mapping[str, Any]


class Middleware:
    """Base class of HOTMESH_MIDDLEWARE entries; every hook passes the call on.

    Instantiated once per process with no arguments, and shared by all threads.
    Call `call_next(call)` to go on (or return without calling it to answer
    yourself). Let BaseExceptions through: a workflow suspends by raising one.
    """

    def start(self, call: StartCall, call_next: Callable[[StartCall], JobHandle]) -> JobHandle:
        """Wrap a start in the caller's process; raising refuses it."""
        return call_next(call)

    def execute_activity(self, call: ActivityCall, call_next: Callable[[ActivityCall], Any]) -> Any:
        """Wrap one activity attempt; return its result. Raising fails the attempt."""
        return call_next(call)

    def execute_workflow(self, call: WorkflowCall, call_next: Callable[[WorkflowCall], Any]) -> Any:
        """Wrap one workflow turn; return the workflow's result. Runs on every replay,
        so keep it free of side effects, like workflow code."""
        return call_next(call)


class MiddlewareError(ImproperlyConfigured):
    """A HOTMESH_MIDDLEWARE entry that cannot be used; `check_id` names the check."""

    def __init__(self, message: str, *, check_id: str) -> None:
        super().__init__(message)
        self.check_id = check_id


def middleware_class(path: object) -> type[Middleware]:
    """Import and return the class at `path`, or raise MiddlewareError saying why."""
    if not isinstance(path, str):
        raise MiddlewareError(
            f"HOTMESH_MIDDLEWARE entries are dotted paths, not {path!r}.", check_id="hotmesh.E030"
        )
    try:
        found = import_string(path)
    except ImportError as exc:
        raise MiddlewareError(
            f"HOTMESH_MIDDLEWARE names {path!r}, which cannot be imported: {exc}",
            check_id="hotmesh.E031",
        ) from exc
    if not isinstance(found, type):
        raise MiddlewareError(
            f"HOTMESH_MIDDLEWARE names {path!r}, which is a {type(found).__name__}, not a class.",
            check_id="hotmesh.E032",
        )
    if not issubclass(found, Middleware):
        raise MiddlewareError(
            f"HOTMESH_MIDDLEWARE names {path!r}, which does not subclass "
            "hotmesh_django.middleware.Middleware.",
            check_id="hotmesh.E033",
        )
    try:
        inspect.signature(found).bind()
    except TypeError as exc:
        raise MiddlewareError(
            f"HOTMESH_MIDDLEWARE names {path!r}, which cannot be created without arguments: {exc}.",
            check_id="hotmesh.E034",
        ) from exc
    except ValueError:
        pass  # no signature to inspect (a C type): trust it
    return found


@dataclasses.dataclass(frozen=True)
class Chain:
    """The bound hooks of the configured middleware, outermost first, per hook."""

    start: tuple[Callable[..., Any], ...] = ()
    execute_activity: tuple[Callable[..., Any], ...] = ()
    execute_workflow: tuple[Callable[..., Any], ...] = ()


_lock = threading.Lock()
_chain: Chain | None = None


def loaded() -> Chain:
    """Return the chain for HOTMESH_MIDDLEWARE, built on first use.

    Raise ImproperlyConfigured for an entry that cannot be used (the hotmesh.E03x
    checks report the same at startup).
    """
    chain = _chain
    if chain is None:
        chain = _build()
    return chain


def _build() -> Chain:
    global _chain  # the per-process cache that _reset empties
    # Locked, so threads racing to the first start or step create each middleware
    # once, as documented.
    with _lock:
        if _chain is None:
            _chain = _make_chain(settings.middleware)
        return _chain


def _make_chain(paths: object) -> Chain:
    if not isinstance(paths, list | tuple):
        raise MiddlewareError(
            f"HOTMESH_MIDDLEWARE must be a list of dotted paths, not {paths!r}.",
            check_id="hotmesh.E030",
        )
    instances = [middleware_class(path)() for path in paths]
    hooks: dict[str, tuple[Callable[..., Any], ...]] = {}
    for name in ("start", "execute_activity", "execute_workflow"):
        # Only overridden hooks join the chain: a middleware that only tags starts
        # adds nothing around activity runs.
        hooks[name] = tuple(
            getattr(m, name)
            for m in instances
            if getattr(type(m), name) is not getattr(Middleware, name)
        )
    return Chain(**hooks)


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: Any) -> None:
    global _chain
    if setting == "HOTMESH_MIDDLEWARE":
        with _lock:
            _chain = None


C = TypeVar("C")
R = TypeVar("R")


def run(hooks: tuple[Callable[..., Any], ...], call: C, inner: Callable[[C], R]) -> R:
    """Pass `call` through `hooks` (outermost first) to `inner`; return the result."""

    def link(index: int) -> Callable[[C], Any]:
        if index == len(hooks):
            return inner
        hook, following = hooks[index], link(index + 1)
        return lambda c: hook(c, following)

    return link(0)(call)  # type: ignore[no-any-return]


def activity_runner(
    func: Callable[..., Any],
    *,
    name: str,
    job_id: int,
    step: int | None,
    attempt: int,
    queue: str,
    headers: Mapping[str, Any],
) -> Callable[..., Any]:
    """Return `func`, or with middleware or headers a function that runs it through
    the execute_activity chain with `headers()` set."""
    hooks = loaded().execute_activity
    if not hooks and not headers:
        return func
    frozen = MappingProxyType(dict(headers))

    def through_chain(*args: Any, **kwargs: Any) -> Any:
        call = ActivityCall(
            name=name,
            job_id=job_id,
            step=step,
            attempt=attempt,
            queue=queue,
            args=args,
            kwargs=kwargs,
            headers=frozen,
        )
        token = _current.set(frozen)
        try:
            return run(hooks, call, lambda c: func(*c.args, **c.kwargs))
        finally:
            _current.reset(token)

    return through_chain


def workflow_runner(
    func: Callable[..., Any],
    *,
    name: str,
    workflow_id: str,
    queue: str,
    headers: Mapping[str, Any],
) -> Callable[..., Any]:
    """Return `func`, or with middleware or headers a function that runs it through
    the execute_workflow chain with `headers()` set."""
    hooks = loaded().execute_workflow
    if not hooks and not headers:
        return func
    frozen = MappingProxyType(dict(headers))

    def through_chain(*args: Any, **kwargs: Any) -> Any:
        call = WorkflowCall(
            name=name,
            workflow_id=workflow_id,
            queue=queue,
            args=args,
            kwargs=kwargs,
            headers=frozen,
        )
        token = _current.set(frozen)
        try:
            return run(hooks, call, lambda c: func(*c.args, **c.kwargs))
        finally:
            _current.reset(token)

    return through_chain
