"""OpenTelemetry spans for jobs and steps (the `tracing` extra).

With `opentelemetry-api` installed (`pip install "hotmesh-django[tracing]"`) `span()`
opens a span on the "hotmesh_django" tracer, which exports wherever the application
configured its tracer provider; without it `span()` returns one shared do-nothing
context manager.

    with tracing.span("hotmesh.step", job_id=job.id, step=3, attempt=1) as s:
        s.set_attribute("hotmesh.outcome", "successful")

Keyword attributes are named `hotmesh.<key>`; None values are left out. To continue
the trace of whoever started a job, store `inject()` with the job and pass it back
as `span(..., carrier=stored)` in the worker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Status, StatusCode
except ImportError:
    trace = None  # type: ignore[assignment]

ENABLED = trace is not None
TRACER_NAME = "hotmesh_django"
ATTRIBUTE_PREFIX = "hotmesh."


class NoopSpan:
    """Stands in for an OpenTelemetry span when opentelemetry-api is missing."""

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        pass

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        pass

    def record_exception(self, exception: BaseException, **kwargs: Any) -> None:
        pass

    def is_recording(self) -> bool:
        return False


class _NoopSpanContext:
    # One stateless instance serves every span() call, nested or concurrent.
    def __enter__(self) -> NoopSpan:
        return NOOP_SPAN

    def __exit__(self, *exc_info: object) -> None:
        return None


NOOP_SPAN = NoopSpan()
_NOOP_CONTEXT = _NoopSpanContext()


def attributes(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Return `attrs` as span attributes: prefixed keys, None dropped, odd types as str."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if not isinstance(value, str | bool | int | float):
            value = str(value)
        out[f"{ATTRIBUTE_PREFIX}{key}"] = value
    return out


def span(name: str, /, *, carrier: Mapping[str, str] | None = None, **attrs: Any) -> Any:
    """Return a context manager that runs its block inside span `name`.

    An exception (an `Exception`) leaving the block is recorded and sets the span's
    status to ERROR; BaseExceptions that are control flow, such as a workflow turn
    suspending, end the span without marking it failed. `carrier` holds the
    propagation headers `inject()` returned, to parent the span on another process's.
    """
    if trace is None or (not carrier and _unconfigured()):
        return _NOOP_CONTEXT
    return _span(name, carrier, attributes(attrs))


def _unconfigured() -> bool:
    # No tracer provider set: every span would be a non-recording one, and with no
    # carrier it would not even pass a trace on. Checked per call, so a provider
    # set later (by the application, or a test) takes effect at once; skipping the
    # span costs a step a lookup instead of a context switch through the API.
    return type(trace.get_tracer_provider()) is trace.ProxyTracerProvider


@contextlib.contextmanager
def _span(name: str, carrier: Mapping[str, str] | None, attrs: dict[str, Any]) -> Iterator[Any]:
    parent = propagate.extract(dict(carrier)) if carrier else None
    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(
        name,
        context=parent,
        attributes=attrs,
        # Handled below, the same way whatever the opentelemetry-api version: older
        # ones would mark a suspended workflow turn (a BaseException) as failed.
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except Exception as exc:
            current.record_exception(exc)
            current.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise


def inject() -> dict[str, str]:
    """Return the current trace context as propagation headers ({} when disabled)."""
    carrier: dict[str, str] = {}
    if trace is not None:
        propagate.inject(carrier)
    return carrier
