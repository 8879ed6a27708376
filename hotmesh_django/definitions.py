"""`@activity`, `@workflow`, `RetryPolicy` and the start options they carry."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from hotmesh_django import context, registry
from hotmesh_django.durations import to_seconds
from hotmesh_django.serialization import check_name_text

if TYPE_CHECKING:
    from hotmesh_django.handles import JobHandle, StepHandle

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_QUEUE = "default"
_MAX_NAME = 255
_MAX_QUEUE = 100
# The stream's priority column is a Postgres integer.
_PRIORITY_RANGE = range(-(2**31), 2**31)


@functools.cache
def signature_of(func: Callable[..., Any]) -> inspect.Signature | None:
    """The signature start() checks a call against; None when there is none to read
    (a builtin, say)."""
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@functools.cache
def positional_names(func: Callable[..., Any]) -> tuple[str, ...]:
    """The names of `func`'s positional parameters, in order, so an error about
    argument 1 can say which parameter that is."""
    signature = signature_of(func)
    if signature is None:
        return ()
    return tuple(p.name for p in signature.parameters.values() if p.kind in _POSITIONAL)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often to run an activity, and how long to wait between runs (seconds).

    Positional arguments follow DESIGN.md's order: max_attempts, initial_interval,
    backoff, max_interval, non_retryable."""

    max_attempts: int = 3
    initial_interval: float = 1.0
    backoff: float = 2.0
    max_interval: float = 300.0
    # Exception types (or their names) that fail the step at once.
    non_retryable: tuple[type[BaseException] | str, ...] = ()

    def __post_init__(self) -> None:
        attempts = self.max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"max_attempts must be an integer >= 1, not {attempts!r}.")
        # Checked here, not when a step first fails: a bad policy found in the worker
        # would leave the step RUNNING until its lease ran out, attempt after attempt.
        # Kept as float seconds, so delay_after's arithmetic works for a timedelta too.
        for field in ("initial_interval", "max_interval"):
            object.__setattr__(self, field, to_seconds(getattr(self, field), field))
        backoff = self.backoff
        if (
            isinstance(backoff, bool)
            or not isinstance(backoff, int | float)
            or not 1 <= backoff <= 100
        ):
            raise ValueError(f"backoff must be a number from 1 to 100, not {self.backoff!r}.")
        if isinstance(self.non_retryable, type | str):
            # non_retryable=ValueError: a one-element tuple was meant.
            object.__setattr__(self, "non_retryable", (self.non_retryable,))
        for item in self.non_retryable:
            if not isinstance(item, str) and not (
                isinstance(item, type) and issubclass(item, BaseException)
            ):
                raise TypeError(
                    f"non_retryable must hold exception types or their names, not {item!r}."
                )

    def delay_after(self, attempt: int) -> float | None:
        """Return seconds to wait before attempt `attempt + 1`, or None to stop."""
        if attempt >= self.max_attempts:
            return None
        # Cap the exponent too: backoff ** 10_000 overflows a float.
        exponent = min(max(attempt - 1, 0), 64)
        return float(min(self.initial_interval * self.backoff**exponent, self.max_interval))

    def is_retryable(self, exc: BaseException) -> bool:
        """Return False for NonRetryableError and the policy's non_retryable types."""
        from hotmesh_django.exceptions import NonRetryableError

        if isinstance(exc, NonRetryableError):
            return False
        for item in self.non_retryable:
            if isinstance(item, str):
                names = {f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__}
                names |= {c.__name__ for c in type(exc).__mro__}
                if item in names:
                    return False
            elif isinstance(exc, item):
                return False
        return True


@dataclasses.dataclass(frozen=True, kw_only=True)
class StartOptions:
    """Options for one start: `.using(workflow_id=, queue=, priority=, delay=, run_at=,
    search=)`."""

    workflow_id: str | None = None
    queue: str | None = None
    priority: int | None = None
    delay: float = 0.0
    # An aware datetime not to start before; the later of it and `delay` wins.
    run_at: datetime.datetime | None = None
    search: Mapping[str, Any] | None = None
    # Groups this job's activities for HOTMESH_QUEUES' per-key limits (e.g. a tenant).
    concurrency_key: str | None = None

    def delay_seconds(self) -> float:
        """Return how long from now this start waits (run_at is read at start time)."""
        if self.run_at is None:
            return self.delay
        from django.utils import timezone

        return max(self.delay, (self.run_at - timezone.now()).total_seconds(), 0.0)

    def __post_init__(self) -> None:
        wid = self.workflow_id
        if wid is not None:
            if not isinstance(wid, str) or not wid or len(wid) > _MAX_NAME:
                raise ValueError(
                    f"workflow_id must be a non-empty string of at most {_MAX_NAME} characters."
                )
            check_name_text(wid, f"workflow_id {wid!r}")
        if self.queue is not None:
            check_queue_name(self.queue)
        if self.priority is not None:
            check_priority(self.priority)
        to_seconds(self.delay, "delay")
        if self.run_at is not None and (
            not isinstance(self.run_at, datetime.datetime) or self.run_at.tzinfo is None
        ):
            raise ValueError(f"run_at must be an aware datetime, not {self.run_at!r}.")
        key = self.concurrency_key
        if key is not None and (not isinstance(key, str) or not key or len(key) > _MAX_NAME):
            raise ValueError(
                f"concurrency_key must be a non-empty string of at most {_MAX_NAME} characters."
            )
        if key is not None:
            check_name_text(key, f"concurrency_key {key!r}")
        if self.search is not None and not isinstance(self.search, Mapping):
            raise TypeError("search must be a mapping of attribute names to values.")


def check_queue_name(queue: object) -> None:
    """Raise ValueError unless `queue` can name a queue (the column holds 100)."""
    if not isinstance(queue, str) or not queue or len(queue) > _MAX_QUEUE:
        raise ValueError(f"queue must be a non-empty string of at most {_MAX_QUEUE} characters.")
    if queue != queue.strip():
        # "orders " is not "orders": a worker given --queues orders would never see it.
        raise ValueError(f"queue must not start or end with whitespace, not {queue!r}.")
    if "," in queue:
        # --queues a,b splits on commas: no worker could be told to serve it.
        raise ValueError(f"queue must not contain a comma, not {queue!r}.")
    check_name_text(queue, f"queue {queue!r}")


def check_priority(priority: object) -> None:
    """Raise TypeError/ValueError unless `priority` fits the integer priority column:
    a value out of range would fail the INSERT and abort the caller's transaction."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int, not {type(priority).__name__}.")
    if priority not in _PRIORITY_RANGE:
        raise ValueError(
            f"priority must be from {_PRIORITY_RANGE.start} to {_PRIORITY_RANGE.stop - 1}, "
            f"not {priority}."
        )


def _seconds(value: float | datetime.timedelta | None, what: str) -> float | None:
    return None if value is None else to_seconds(value, what)


def _using(definition: Any, changes: dict[str, Any]) -> Any:
    fields = {f.name for f in dataclasses.fields(StartOptions)}
    unknown = set(changes) - fields
    if unknown:
        raise TypeError(
            f"using() got unknown option(s) {', '.join(sorted(unknown))}; "
            f"expected some of {', '.join(sorted(fields))}."
        )
    if "delay" in changes:
        changes["delay"] = _seconds(changes["delay"], "delay") or 0.0
    options = dataclasses.replace(definition.options, **changes)
    return dataclasses.replace(definition, options=options)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ActivityDefinition(Generic[P, R]):
    """A function made durable. Calling it inside a workflow makes a durable step."""

    func: Callable[P, R]
    name: str  # Stable id written to the journal; renaming it breaks replay.
    queue: str = DEFAULT_QUEUE
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    timeout: float | None = None
    priority: int = 0
    atomic: bool = False
    options: StartOptions = dataclasses.field(default_factory=StartOptions)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        ctx = context.current()
        if ctx is None:
            return self.func(*args, **kwargs)
        return ctx.call_activity(self, args, kwargs).result()  # type: ignore[no-any-return]

    def start(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle | StepHandle:
        """Start a job that runs this activity; inside a workflow, start a step."""
        ctx = context.current()
        if ctx is not None:
            return ctx.call_activity(self, args, kwargs)
        from hotmesh_django.engine.start import start_job

        return start_job(self, args, kwargs)

    def using(self, **changes: Any) -> ActivityDefinition[P, R]:
        """Return a copy that starts with other options."""
        return _using(self, changes)  # type: ignore[no-any-return]

    @property
    def __name__(self) -> str:
        return self.func.__name__

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        return self.func.__doc__


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkflowDefinition(Generic[P, R]):
    """A reentrant function whose every step is journaled."""

    func: Callable[P, R]
    name: str
    queue: str = DEFAULT_QUEUE
    timeout: float | None = None
    priority: int = 0
    # A cron expression: every worker's heartbeat starts the workflow once per slot.
    schedule: str | None = None
    # The IANA timezone `schedule` is read in.
    timezone: str = "UTC"
    options: StartOptions = dataclasses.field(default_factory=StartOptions)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        ctx = context.current()
        if ctx is None:
            return self.func(*args, **kwargs)
        return ctx.call_child(self, args, kwargs).result()  # type: ignore[no-any-return]

    def start(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle | StepHandle:
        """Start a job running this workflow; inside a workflow, start a child."""
        ctx = context.current()
        if ctx is not None:
            return ctx.call_child(self, args, kwargs)
        from hotmesh_django.engine.start import start_job

        return start_job(self, args, kwargs)

    def signal_with_start(
        self, signal_name: str, payload: Any = None, /, *args: Any, **kwargs: Any
    ) -> JobHandle:
        """Start the workflow unless its workflow_id exists, and send it a signal.

        Both happen in one transaction: a caller never sees the job without the
        signal, and concurrent callers share one job and each deliver their signal.
        Raise JobFinishedError when the existing job has already finished.
        """
        from django.db import transaction

        from hotmesh_django.engine.control import send_signal
        from hotmesh_django.engine.start import start_job
        from hotmesh_django.serialization import check_signal_name

        if context.current() is not None:
            raise TypeError("signal_with_start() is for callers outside a workflow.")
        check_signal_name(signal_name)
        with transaction.atomic():
            handle = start_job(self, args, kwargs)
            send_signal(handle.id, signal_name, payload)
        return handle

    def using(self, **changes: Any) -> WorkflowDefinition[P, R]:
        """Return a copy that starts with other options."""
        return _using(self, changes)  # type: ignore[no-any-return]

    @property
    def __name__(self) -> str:
        return self.func.__name__

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        return self.func.__doc__


def _name_first(
    func: Callable[P, R] | str | None, name: str | None, what: str
) -> tuple[Callable[P, R] | None, str | None]:
    """`@activity("name")`: a string where the function goes is the name."""
    if not isinstance(func, str):
        return func, name
    if name is not None:
        raise TypeError(f"@{what} got its name twice: {func!r} and name={name!r}.")
    return None, func


def _check_function(f: Callable[..., Any], what: str) -> None:
    if not callable(f) or isinstance(f, type):
        kind = "a class" if isinstance(f, type) else type(f).__name__
        raise TypeError(f"@{what} decorates a function, not {kind}.")
    if inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f):
        # Workers call it in a thread and store what it returns: a coroutine would
        # never run, and each attempt would fail as an unstorable result.
        raise TypeError(
            f"@{what} needs a plain function; {f.__qualname__} is async. Run the "
            "coroutine inside a plain function (asyncio.run) instead."
        )
    if inspect.isgeneratorfunction(f):
        raise TypeError(
            f"@{what} needs a plain function; {f.__qualname__} is a generator, whose "
            "body would never run. Return a list instead."
        )
    qualname = getattr(f, "__qualname__", "")
    if "<locals>" in qualname or getattr(f, "__name__", "") == "<lambda>":
        # Workers find definitions by importing modules; a nested function or a
        # lambda cannot be found that way.
        raise TypeError(f"@{what} needs a module-level function; {qualname} is not.")


def _check_common(name: str | None, queue: str, priority: int) -> None:
    if name is not None:
        if not isinstance(name, str) or not name or len(name) > _MAX_NAME:
            raise ValueError(f"name must be a non-empty string of at most {_MAX_NAME} characters.")
        check_name_text(name, f"name {name!r}")
    check_queue_name(queue)
    check_priority(priority)


@overload
def activity(func: Callable[P, R], /) -> ActivityDefinition[P, R]: ...
@overload
def activity(
    name: str | None = None,
    /,
    *,
    queue: str = DEFAULT_QUEUE,
    retry: RetryPolicy | None = None,
    timeout: float | datetime.timedelta | None = None,
    priority: int = 0,
    atomic: bool = False,
) -> Callable[[Callable[P, R]], ActivityDefinition[P, R]]: ...
@overload
def activity(
    *,
    name: str | None = None,
    queue: str = DEFAULT_QUEUE,
    retry: RetryPolicy | None = None,
    timeout: float | datetime.timedelta | None = None,
    priority: int = 0,
    atomic: bool = False,
) -> Callable[[Callable[P, R]], ActivityDefinition[P, R]]: ...
def activity(
    func: Callable[P, R] | str | None = None,
    /,
    *,
    name: str | None = None,
    queue: str = DEFAULT_QUEUE,
    retry: RetryPolicy | None = None,
    timeout: float | datetime.timedelta | None = None,
    priority: int = 0,
    atomic: bool = False,
) -> ActivityDefinition[P, R] | Callable[[Callable[P, R]], ActivityDefinition[P, R]]:
    """Register a module-level function as a durable activity.

    `@activity`, `@activity(name=..., ...)` or `@activity("name", ...)`."""
    func, name = _name_first(func, name, "activity")
    _check_common(name, queue, priority)
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise TypeError("retry must be a RetryPolicy.")
    if not isinstance(atomic, bool):
        raise TypeError(f"atomic must be True or False, not {atomic!r}.")
    timeout_s = _seconds(timeout, "timeout")
    if timeout_s == 0:
        raise ValueError("timeout must be positive.")

    def decorate(f: Callable[P, R]) -> ActivityDefinition[P, R]:
        _check_function(f, "activity")
        definition = ActivityDefinition(
            func=f,
            name=name or f"{f.__module__}.{f.__qualname__}",
            queue=queue,
            retry=retry or RetryPolicy(),
            timeout=timeout_s,
            priority=priority,
            atomic=atomic,
        )
        registry.register_activity(definition)
        return definition

    return decorate(func) if func is not None else decorate


@overload
def workflow(func: Callable[P, R], /) -> WorkflowDefinition[P, R]: ...
@overload
def workflow(
    name: str | None = None,
    /,
    *,
    queue: str = DEFAULT_QUEUE,
    timeout: float | datetime.timedelta | None = None,
    priority: int = 0,
    schedule: str | None = None,
    timezone: str = "UTC",
) -> Callable[[Callable[P, R]], WorkflowDefinition[P, R]]: ...
@overload
def workflow(
    *,
    name: str | None = None,
    queue: str = DEFAULT_QUEUE,
    timeout: float | datetime.timedelta | None = None,
    priority: int = 0,
    schedule: str | None = None,
    timezone: str = "UTC",
) -> Callable[[Callable[P, R]], WorkflowDefinition[P, R]]: ...
def workflow(
    func: Callable[P, R] | str | None = None,
    /,
    *,
    name: str | None = None,
    queue: str = DEFAULT_QUEUE,
    timeout: float | datetime.timedelta | None = None,
    priority: int = 0,
    schedule: str | None = None,
    timezone: str = "UTC",
) -> WorkflowDefinition[P, R] | Callable[[Callable[P, R]], WorkflowDefinition[P, R]]:
    """Register a module-level function as a durable workflow.

    With `schedule` (a cron expression read in `timezone`), workers also start it
    once per cron slot, with no arguments. Raise ValueError for a bad cron
    expression or an unknown timezone. The name may come first, as for @activity.
    """
    func, name = _name_first(func, name, "workflow")
    _check_common(name, queue, priority)
    timeout_s = _seconds(timeout, "timeout")
    if timeout_s == 0:
        raise ValueError("timeout must be positive.")
    if schedule is not None:
        # Imported here: the engine needs the models, which definitions must not.
        from hotmesh_django.engine.schedules import validate_schedule

        validate_schedule(schedule, timezone)

    def decorate(f: Callable[P, R]) -> WorkflowDefinition[P, R]:
        _check_function(f, "workflow")
        definition = WorkflowDefinition(
            func=f,
            name=name or f"{f.__module__}.{f.__qualname__}",
            queue=queue,
            timeout=timeout_s,
            priority=priority,
            schedule=schedule,
            timezone=timezone,
        )
        registry.register_workflow(definition)
        return definition

    return decorate(func) if func is not None else decorate
