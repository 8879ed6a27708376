"""Prometheus metrics for jobs, steps, claims and queues (the `metrics` extra).

With `prometheus_client` installed (`pip install "hotmesh-django[metrics]"`) the
functions below record into its default registry; without it they are no-ops that
cost a function call, and `metrics_view` answers 501.

Metrics live in the process that records them. A worker process records steps and
claims, so either expose each worker (`serve(port)`), or run every process of a host
with PROMETHEUS_MULTIPROC_DIR set, as prometheus_client documents, and route
`metrics_view` in the web process:

    path("metrics/", hotmesh_django.metrics.metrics_view)

The view is not protected: route it where only the scraper can reach it.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError
from django.http import HttpRequest, HttpResponse

from hotmesh_django.choices import FINISHED_STATUSES, StreamStatus

try:
    import prometheus_client
except ImportError:
    prometheus_client = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

ENABLED = prometheus_client is not None

# What an attempt of a step came to: `observe_step(..., outcome=...)`.
SUCCESSFUL = "successful"
RETRIED = "retried"
FAILED = "failed"
OUTCOMES = frozenset({SUCCESSFUL, RETRIED, FAILED})

# Activities run from milliseconds to hours; claims take milliseconds.
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
CLAIM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class NoopMetric:
    """Stands in for a Counter, Gauge or Histogram when prometheus_client is missing."""

    def labels(self, *values: Any, **labels: Any) -> NoopMetric:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass

    def remove(self, *values: Any) -> None:
        pass

    def clear(self) -> None:
        pass


def _metric(kind: str, name: str, documentation: str, labels: list[str], **kwargs: Any) -> Any:
    if prometheus_client is None:
        return NoopMetric()
    return getattr(prometheus_client, kind)(name, documentation, labels, **kwargs)


# Counter names gain the `_total` suffix in the exposition.
JOBS_STARTED = _metric(
    "Counter",
    "hotmesh_jobs_started",
    "Jobs created (workflows and activity jobs).",
    ["name", "queue"],
)
JOBS_FINISHED = _metric(
    "Counter", "hotmesh_jobs_finished", "Jobs that reached a final status.", ["name", "status"]
)
STEP_ATTEMPTS_FAILED = _metric(
    "Counter",
    "hotmesh_step_attempts_failed",
    "Step attempts that failed for good (no retry left, or not retryable).",
    ["name", "queue"],
)
STEP_ATTEMPTS_RETRIED = _metric(
    "Counter",
    "hotmesh_step_attempts_retried",
    "Step attempts that failed and were scheduled to run again.",
    ["name", "queue"],
)
STEP_DURATION = _metric(
    "Histogram",
    "hotmesh_step_duration_seconds",
    "Wall time of one attempt of an activity, by outcome.",
    ["name", "queue", "outcome"],
    buckets=STEP_BUCKETS,
)
CLAIM_LATENCY = _metric(
    "Histogram",
    "hotmesh_claim_latency_seconds",
    "Time one claim statement took, empty claims included.",
    ["queue"],
    buckets=CLAIM_BUCKETS,
)
MESSAGES_CLAIMED = _metric(
    "Counter", "hotmesh_messages_claimed", "Stream messages claimed by workers.", ["queue"]
)
QUEUE_DEPTH = _metric(
    "Gauge",
    "hotmesh_queue_depth",
    "Stream messages by queue and status, as of the last collect_queue_depths().",
    ["queue", "status"],
    # Whichever process collected last is right; summing processes would not be.
    multiprocess_mode="mostrecent",
)

_FINISHED = frozenset(str(s) for s in FINISHED_STATUSES)
_depth_lock = threading.Lock()
_depth_queues: set[str] = set()


# Label values are passed by position, in the order each metric declares them: the
# keyword form validates the names on every call, and these run once per step.


def job_started(name: str, queue: str) -> None:
    """Count a job created for definition `name` on `queue`."""
    JOBS_STARTED.labels(name, queue).inc()


def job_finished(name: str, status: str) -> None:
    """Count a job of `name` that reached final `status` (SUCCESSFUL, FAILED, CANCELLED).

    Raise ValueError for any other status.
    """
    status = str(status)
    if status not in _FINISHED:
        raise ValueError(f"status must be one of {sorted(_FINISHED)}, not {status!r}.")
    JOBS_FINISHED.labels(name, status).inc()


def observe_step(name: str, queue: str, seconds: float, outcome: str) -> None:
    """Record one attempt of activity `name` that ran `seconds` and came to `outcome`.

    `outcome` is SUCCESSFUL, RETRIED or FAILED (the constants of this module); raise
    ValueError for anything else.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}, not {outcome!r}.")
    STEP_DURATION.labels(name, queue, outcome).observe(seconds)
    if outcome == RETRIED:
        STEP_ATTEMPTS_RETRIED.labels(name, queue).inc()
    elif outcome == FAILED:
        STEP_ATTEMPTS_FAILED.labels(name, queue).inc()


def observe_claim(queue: str, seconds: float, count: int) -> None:
    """Record one claim on `queue` that took `seconds` and returned `count` messages."""
    CLAIM_LATENCY.labels(queue).observe(seconds)
    if count:
        MESSAGES_CLAIMED.labels(queue).inc(count)


def collect_queue_depths(*, using: str = DEFAULT_DB_ALIAS) -> dict[tuple[str, str], int]:
    """Count Stream messages by queue and status, set the gauge, and return the counts.

    One GROUP BY over the Stream table, which holds only unacknowledged messages.
    Every status of every queue seen so far is set, to 0 when it has none, so a
    drained queue reads 0 rather than vanishing.
    """
    from django.db.models import Count

    from hotmesh_django.models import Stream

    rows = (
        Stream.objects.using(using)
        .order_by()
        .values_list("queue", "status")
        .annotate(count=Count("id"))
    )
    depths = {(queue, status): count for queue, status, count in rows}
    with _depth_lock:
        _depth_queues.update(queue for queue, _ in depths)
        for queue in _depth_queues:
            for status in StreamStatus.values:
                value = depths.get((queue, status), 0)
                QUEUE_DEPTH.labels(queue=queue, status=status).set(value)
    return depths


def _registry() -> Any:
    if prometheus_client is None:
        raise RuntimeError("prometheus_client is not installed.")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return prometheus_client.REGISTRY


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Serve the metrics in the Prometheus text format, queue depths collected now.

    Answer 501 when prometheus_client is not installed. A failed depth query is
    logged and the other metrics are still served.
    """
    if prometheus_client is None:
        return HttpResponse(
            'prometheus_client is not installed: pip install "hotmesh-django[metrics]"\n',
            status=501,
            content_type="text/plain; charset=utf-8",
        )
    try:
        collect_queue_depths()
    except DatabaseError as exc:
        logger.warning("queue depths not collected error=%s", exc)
    return HttpResponse(
        prometheus_client.generate_latest(_registry()),
        content_type=prometheus_client.CONTENT_TYPE_LATEST,
    )


def serve(port: int, addr: str = "0.0.0.0") -> bool:  # noqa: S104 - a scrape target
    """Serve this process's metrics over HTTP on `addr:port` from a daemon thread.

    Return False, serving nothing, when prometheus_client is not installed.
    """
    if prometheus_client is None:
        return False
    prometheus_client.start_http_server(port, addr=addr, registry=_registry())
    return True
