"""The data-model bound (bench/bound.py) runs the engine's real lifecycle."""

from __future__ import annotations

import psycopg
import pytest

from bench import bound
from bench.workloads import libpq_params
from hotmesh_django.models import Activity, Job, Journal, Stream


def _run_once(script: str, conn: psycopg.Connection[object], client_id: int) -> None:
    for statement in script.split(";\n"):
        if statement.strip():
            conn.execute(statement.replace(":client_id", str(client_id)))  # type: ignore[arg-type]


@pytest.mark.django_db(transaction=True)
def test_engine100_claims_and_acks_like_a_worker() -> None:
    with psycopg.connect(**libpq_params(), autocommit=True) as conn:
        bound._prefill(conn, 150)
        _run_once(bound.engine_script(), conn, client_id=1)

    # One claim of 100, one ack of the same 100: the lifecycle a worker writes.
    finished = Job.objects.filter(status="SUCCESSFUL")
    assert finished.count() == 100
    assert Job.objects.filter(status="READY").count() == 50
    assert Activity.objects.filter(status="SUCCESSFUL", attempts=1).count() == 100
    assert Stream.objects.count() == 50 and not Stream.objects.exclude(status="READY").exists()
    events = Journal.objects.filter(job__in=finished).values_list("event", flat=True)
    assert sorted(set(events)) == ["completed", "created", "step_completed"]
    assert len(events) == 300
    job = finished.first()
    assert job is not None and job.started_at is not None and job.finished_at is not None


@pytest.mark.django_db(transaction=True)
def test_contract100_finishes_jobs_without_steps() -> None:
    with psycopg.connect(**libpq_params(), autocommit=True) as conn:
        bound._prefill(conn, 150)
        _run_once(bound.contract_script(), conn, client_id=3)

    finished = Job.objects.filter(status="SUCCESSFUL", started_at__isnull=False)
    assert finished.count() == 100 and Stream.objects.count() == 50
    assert Journal.objects.filter(job__in=finished, event="completed").count() == 100


@pytest.mark.django_db(transaction=True)
def test_stream100_touches_the_queue_table_only() -> None:
    with psycopg.connect(**libpq_params(), autocommit=True) as conn:
        bound._prefill(conn, 150)
        _run_once(bound.stream_script(), conn, client_id=2)

    assert Stream.objects.count() == 50
    assert Job.objects.filter(status="READY").count() == 150


def test_every_engine_parameter_is_bound() -> None:
    with pytest.raises(ValueError, match="left unbound"):
        bound._substitute("SELECT %(queue)s, %(other)s", {"queue": "'q'"})
