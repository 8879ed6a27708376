"""Metrics (prometheus_client) and tracing (opentelemetry), and their no-op fallbacks."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from django.test import RequestFactory

from hotmesh_django import metrics, tracing
from hotmesh_django.exceptions import Suspend
from hotmesh_django.models import JobStatus, StreamStatus
from tests.factories import StreamFactory

prometheus_client = pytest.importorskip("prometheus_client")


def sample(metric: str, /, **labels: str) -> float:
    value = prometheus_client.REGISTRY.get_sample_value(metric, labels)
    return 0.0 if value is None else value


def fresh_copy(module_name: str, blocked: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Execute a new copy of `module_name` as if package `blocked` were not installed.

    The copy is not put in sys.modules, so the real module and the metrics it
    registered stay as they are.
    """
    monkeypatch.setitem(sys.modules, blocked, None)
    spec = importlib.util.find_spec(module_name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- metrics -------------------------------------------------------------------------


def test_metrics_are_enabled_with_prometheus_client_installed() -> None:
    assert metrics.ENABLED
    assert isinstance(metrics.JOBS_STARTED, prometheus_client.Counter)
    assert isinstance(metrics.STEP_DURATION, prometheus_client.Histogram)
    assert isinstance(metrics.QUEUE_DEPTH, prometheus_client.Gauge)


def test_job_started_counts_by_name_and_queue() -> None:
    labels = {"name": "m.started", "queue": "mq"}
    before = sample("hotmesh_jobs_started_total", **labels)
    metrics.job_started("m.started", "mq")
    metrics.job_started("m.started", "mq")
    assert sample("hotmesh_jobs_started_total", **labels) == before + 2


def test_job_finished_counts_by_status() -> None:
    labels = {"name": "m.finished", "status": "FAILED"}
    before = sample("hotmesh_jobs_finished_total", **labels)
    metrics.job_finished("m.finished", JobStatus.FAILED)
    assert sample("hotmesh_jobs_finished_total", **labels) == before + 1
    metrics.job_finished("m.finished", "SUCCESSFUL")
    assert sample("hotmesh_jobs_finished_total", name="m.finished", status="SUCCESSFUL") >= 1


@pytest.mark.parametrize("status", ["RUNNING", "READY", "done", ""])
def test_job_finished_refuses_a_status_that_is_not_final(status: str) -> None:
    with pytest.raises(ValueError, match="status must be one of"):
        metrics.job_finished("m.finished", status)


def test_observe_step_records_duration_and_outcome_counters() -> None:
    step = {"name": "m.step", "queue": "mq"}
    retried_before = sample("hotmesh_step_attempts_retried_total", **step)
    failed_before = sample("hotmesh_step_attempts_failed_total", **step)
    ok = {**step, "outcome": "successful"}
    count_before = sample("hotmesh_step_duration_seconds_count", **ok)
    sum_before = sample("hotmesh_step_duration_seconds_sum", **ok)

    metrics.observe_step("m.step", "mq", 0.2, metrics.SUCCESSFUL)
    metrics.observe_step("m.step", "mq", 1.5, metrics.RETRIED)
    metrics.observe_step("m.step", "mq", 3.0, metrics.FAILED)

    assert sample("hotmesh_step_duration_seconds_count", **ok) == count_before + 1
    assert sample("hotmesh_step_duration_seconds_sum", **ok) == pytest.approx(sum_before + 0.2)
    bucket = sample("hotmesh_step_duration_seconds_bucket", **ok, le="0.25")
    assert bucket >= 1
    assert sample("hotmesh_step_duration_seconds_count", **step, outcome="retried") >= 1
    assert sample("hotmesh_step_attempts_retried_total", **step) == retried_before + 1
    assert sample("hotmesh_step_attempts_failed_total", **step) == failed_before + 1


def test_observe_step_refuses_an_unknown_outcome() -> None:
    with pytest.raises(ValueError, match="outcome must be one of"):
        metrics.observe_step("m.step", "mq", 0.1, "SUCCESSFUL")


def test_observe_claim_records_latency_and_messages() -> None:
    before_count = sample("hotmesh_claim_latency_seconds_count", queue="mc")
    before_claimed = sample("hotmesh_messages_claimed_total", queue="mc")
    metrics.observe_claim("mc", 0.002, 5)
    metrics.observe_claim("mc", 0.001, 0)  # an empty claim: latency only
    assert sample("hotmesh_claim_latency_seconds_count", queue="mc") == before_count + 2
    assert sample("hotmesh_messages_claimed_total", queue="mc") == before_claimed + 5


@pytest.mark.django_db
def test_collect_queue_depths_counts_by_queue_and_status(
    django_assert_num_queries: Any,
) -> None:
    StreamFactory.create_batch(3, queue="qa", status=StreamStatus.READY)
    StreamFactory(queue="qa", status=StreamStatus.RUNNING)
    StreamFactory.create_batch(2, queue="qb", status=StreamStatus.SCHEDULED)

    with django_assert_num_queries(1):
        depths = metrics.collect_queue_depths()

    assert depths == {
        ("qa", "READY"): 3,
        ("qa", "RUNNING"): 1,
        ("qb", "SCHEDULED"): 2,
    }
    assert sample("hotmesh_queue_depth", queue="qa", status="READY") == 3
    assert sample("hotmesh_queue_depth", queue="qa", status="RUNNING") == 1
    assert sample("hotmesh_queue_depth", queue="qa", status="SCHEDULED") == 0
    assert sample("hotmesh_queue_depth", queue="qb", status="SCHEDULED") == 2

    # A drained queue reads 0; it does not vanish.
    from hotmesh_django.models import Stream

    Stream.objects.filter(queue="qa").delete()
    assert metrics.collect_queue_depths() == {("qb", "SCHEDULED"): 2}
    assert (
        prometheus_client.REGISTRY.get_sample_value(
            "hotmesh_queue_depth", {"queue": "qa", "status": "READY"}
        )
        == 0
    )


@pytest.mark.django_db
def test_metrics_view_serves_the_text_exposition() -> None:
    StreamFactory(queue="qview", status=StreamStatus.READY)
    metrics.job_started("m.view", "qview")
    response = metrics.metrics_view(RequestFactory().get("/metrics/"))
    assert response.status_code == 200
    assert response["Content-Type"] == prometheus_client.CONTENT_TYPE_LATEST
    body = response.content.decode()
    assert 'hotmesh_queue_depth{queue="qview",status="READY"} 1.0' in body
    assert 'hotmesh_jobs_started_total{name="m.view",queue="qview"}' in body
    for name in (
        "hotmesh_jobs_finished_total",
        "hotmesh_step_duration_seconds",
        "hotmesh_claim_latency_seconds",
        "hotmesh_step_attempts_failed_total",
        "hotmesh_step_attempts_retried_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in body


@pytest.mark.django_db
def test_metrics_view_survives_a_failed_depth_query(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db import OperationalError

    def broken(**kwargs: Any) -> None:
        raise OperationalError("server closed the connection")

    monkeypatch.setattr(metrics, "collect_queue_depths", broken)
    response = metrics.metrics_view(RequestFactory().get("/metrics/"))
    assert response.status_code == 200
    assert b"hotmesh_jobs_started_total" in response.content


def test_without_prometheus_client_everything_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    noop = fresh_copy("hotmesh_django.metrics", "prometheus_client", monkeypatch)
    assert not noop.ENABLED
    for metric in (noop.JOBS_STARTED, noop.STEP_DURATION, noop.QUEUE_DEPTH):
        assert isinstance(metric, noop.NoopMetric)
    noop.job_started("n", "q")
    noop.job_finished("n", "SUCCESSFUL")
    noop.observe_step("n", "q", 0.1, noop.RETRIED)
    noop.observe_claim("q", 0.001, 3)
    noop.QUEUE_DEPTH.labels(queue="q", status="READY").set(4)
    assert noop.serve(0) is False
    # Mistakes in the calls still show, with or without the extra.
    with pytest.raises(ValueError, match="outcome"):
        noop.observe_step("n", "q", 0.1, "bogus")
    response = noop.metrics_view(RequestFactory().get("/metrics/"))
    assert response.status_code == 501
    assert b"hotmesh-django[metrics]" in response.content


# -- tracing -------------------------------------------------------------------------


def test_without_opentelemetry_span_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    noop = fresh_copy("hotmesh_django.tracing", "opentelemetry", monkeypatch)
    assert not noop.ENABLED
    with noop.span("hotmesh.job", job_id=1) as outer, noop.span("hotmesh.step") as inner:
        assert outer is inner is noop.NOOP_SPAN
        inner.set_attribute("k", "v")
        inner.add_event("e")
        assert not inner.is_recording()
    with pytest.raises(KeyError), noop.span("hotmesh.step"):
        raise KeyError("propagates")
    assert noop.inject() == {}


def test_attributes_are_prefixed_and_cleaned() -> None:
    assert tracing.attributes({"job_id": 7, "step": None, "name": "a", "ok": True, "x": [1]}) == {
        "hotmesh.job_id": 7,
        "hotmesh.name": "a",
        "hotmesh.ok": True,
        "hotmesh.x": "[1]",
    }


@pytest.fixture(scope="module")
def exporter() -> Iterator[Any]:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield memory
    memory.shutdown()


def test_span_records_name_attributes_and_nesting(exporter: Any) -> None:
    exporter.clear()
    assert tracing.ENABLED
    with tracing.span("hotmesh.job", job_id=3, name="t.add") as job_span:
        assert job_span.is_recording()
        with tracing.span("hotmesh.step", step=1, attempt=2, worker=None):
            pass
    step, job = exporter.get_finished_spans()
    assert (job.name, step.name) == ("hotmesh.job", "hotmesh.step")
    assert dict(job.attributes) == {"hotmesh.job_id": 3, "hotmesh.name": "t.add"}
    assert dict(step.attributes) == {"hotmesh.step": 1, "hotmesh.attempt": 2}
    assert step.parent is not None and step.parent.span_id == job.context.span_id


def test_span_marks_an_exception_as_an_error(exporter: Any) -> None:
    from opentelemetry.trace import StatusCode

    exporter.clear()
    with pytest.raises(ValueError), tracing.span("hotmesh.step"):
        raise ValueError("nope")
    [span] = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "ValueError: nope"
    assert [event.name for event in span.events] == ["exception"]


def test_span_does_not_mark_a_suspended_turn_as_failed(exporter: Any) -> None:
    from opentelemetry.trace import StatusCode

    exporter.clear()
    with pytest.raises(Suspend), tracing.span("hotmesh.turn"):
        raise Suspend()
    [span] = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.UNSET
    assert list(span.events) == []


def test_inject_and_carrier_continue_a_trace(exporter: Any) -> None:
    exporter.clear()
    with tracing.span("hotmesh.start"):
        carrier = tracing.inject()
    assert "traceparent" in carrier
    with tracing.span("hotmesh.job", carrier=carrier):
        pass
    start, job = exporter.get_finished_spans()
    assert job.context.trace_id == start.context.trace_id
    assert job.parent is not None and job.parent.span_id == start.context.span_id


def test_span_without_a_tracer_provider_or_carrier_costs_no_api_call() -> None:
    # In a fresh interpreter: this module's exporter fixture sets a global provider.
    import subprocess
    import sys

    pytest.importorskip("opentelemetry.sdk")
    script = (
        "from hotmesh_django import tracing\n"
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "assert tracing.span('a') is tracing._NOOP_CONTEXT\n"
        # A carrier still gets a real (non-recording) span, so it passes the trace on.
        "carrier = {'traceparent': '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'}\n"
        "with tracing.span('b', carrier=carrier):\n"
        "    assert tracing.inject()['traceparent'].startswith('00-0af7651916cd43dd')\n"
        "trace.set_tracer_provider(TracerProvider())\n"
        "with tracing.span('c') as s:\n"
        "    assert s.is_recording()\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
