"""Sticky turns: a step's ack and the turn it leads to, as one guarded statement.

The engine is driven step by step on the test's own connection (claim, turn, ack),
so each test decides exactly what else writes to the job while a step "runs".
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

import pytest
from django.db import connection
from django.db.models.functions import Now
from django.test.utils import CaptureQueriesContext
from hypothesis import given

import hotmesh_django as hm
from hotmesh_django.engine.claim import Claimed, claim
from hotmesh_django.engine.execute import ack_success
from hotmesh_django.engine.sticky import jsonb_view
from hotmesh_django.engine.turn import Local, run_turn
from hotmesh_django.models import Activity, Job, JobStatus, Journal
from hotmesh_django.serialization import to_json
from tests import activities as a
from tests import workflows as w
from tests.fuzzing import FUZZ, values

pytestmark = pytest.mark.django_db(transaction=True)


@hm.workflow(name="t.sticky.by_key")
def by_key() -> list[Any]:
    """Steps chosen by the keys of a step's result, in the order the result has them."""
    mapping = a.echo({"bbb": 1, "a": 2, "cc": 3})
    done = [a.echo(key) if len(key) > 1 else a.add(0, 0) for key in mapping]
    hm.wait_for_signal("go")
    return done


def _local(worker_id: uuid.UUID) -> Local:
    return Local(worker_id=worker_id, queues=None, lease_seconds=60)


def _first_step(handle: Any, worker_id: uuid.UUID) -> Claimed:
    """Claim the job's first turn and run it: return the step it handed this worker."""
    (turn,) = claim(queue="default", worker_id=worker_id, limit=1, lease_seconds=60)
    step = run_turn(turn, _local(worker_id))
    assert step is not None and step.kind == "STEP"
    assert step.cache is not None  # the turn left its copy of the job with the step
    return step


def _history(job_id: int) -> list[tuple[Any, ...]]:
    steps = Activity.objects.filter(job_id=job_id).order_by("seq")
    entries = Journal.objects.filter(job_id=job_id).order_by("id")
    return [(s.seq, s.name, s.status, s.input, s.output, s.attempts) for s in steps] + [
        (e.step, e.event, e.name, e.attempt, e.data) for e in entries
    ]


def test_each_later_step_is_acked_with_its_turn_in_one_statement() -> None:
    worker_id = uuid.uuid4()
    handle = w.three_steps.start(1)
    step = _first_step(handle, worker_id)
    outputs = iter([2, 3, 4])
    following: Claimed | None = step
    statements = []
    while following is not None:
        with CaptureQueriesContext(connection) as queries:
            acked, following = ack_success(following, _local(worker_id), next(outputs))
        assert acked
        statements.append(len(queries))
    assert statements == [1, 1, 1]
    assert handle.result(timeout=1) == 4

    # The same history as the usual path (lock, read, replay, write) leaves.
    usual = w.three_steps.start(1)
    following = _first_step(usual, worker_id)
    outputs = iter([2, 3, 4])
    while following is not None:
        plain = dataclasses.replace(following, cache=None)
        with CaptureQueriesContext(connection) as queries:
            acked, following = ack_success(plain, _local(worker_id), next(outputs))
        assert acked and len(queries) > 1
    assert usual.result(timeout=1) == 4
    assert _history(Job.objects.get(workflow_id=handle.id).pk) == _history(
        Job.objects.get(workflow_id=usual.id).pk
    )


def test_a_job_row_written_meanwhile_sends_the_ack_the_usual_way() -> None:
    worker_id = uuid.uuid4()
    handle = w.three_steps.start(1)
    step = _first_step(handle, worker_id)
    # Any other writer of the job (a turn, an admin action) makes a new row version.
    Job.objects.filter(workflow_id=handle.id).update(updated_at=Now())
    with CaptureQueriesContext(connection) as queries:
        acked, following = ack_success(step, _local(worker_id), 2)
    assert acked and len(queries) > 1  # the guarded statement wrote nothing
    while following is not None:
        acked, following = ack_success(following, _local(worker_id), following.step + 1)
        assert acked
    assert handle.result(timeout=1) == 4
    job = Job.objects.get(workflow_id=handle.id)
    completed = Journal.objects.filter(job=job, event="step_completed")
    assert sorted(completed.values_list("step", flat=True)) == [1, 2, 3]


def test_a_job_cancelled_mid_step_keeps_nothing_of_the_late_result() -> None:
    worker_id = uuid.uuid4()
    handle = w.three_steps.start(1)
    step = _first_step(handle, worker_id)
    assert handle.cancel()
    assert ack_success(step, _local(worker_id), 2) == (False, None)
    job = Job.objects.get(workflow_id=handle.id)
    assert job.status == JobStatus.CANCELLED
    assert list(Activity.objects.filter(job=job).values_list("seq", "status")) == [
        (1, JobStatus.CANCELLED)
    ]


def test_a_lost_lease_writes_nothing() -> None:
    worker_id = uuid.uuid4()
    handle = w.three_steps.start(1)
    step = _first_step(handle, worker_id)
    # Rescued and claimed by another worker meanwhile.
    from hotmesh_django.models import Stream

    Stream.objects.filter(pk=step.id).update(worker=uuid.uuid4())
    assert ack_success(step, _local(worker_id), 2) == (False, None)
    job = Job.objects.get(workflow_id=handle.id)
    assert list(Activity.objects.filter(job=job).values_list("seq", "status")) == [
        (1, JobStatus.RUNNING)
    ]
    assert not Journal.objects.filter(job=job, event="step_completed").exists()


def test_a_replay_sees_a_result_in_the_order_later_replays_read_it() -> None:
    # jsonb keeps object keys shorter-first: {"a", "cc", "bbb"}. A replay from the
    # worker's copy that saw the activity's own order ("bbb" first) would schedule
    # other steps than the replay after the signal, which reads the table.
    worker_id = uuid.uuid4()
    handle = by_key.start()
    following: Claimed | None = _first_step(handle, worker_id)
    outputs = iter([{"bbb": 1, "a": 2, "cc": 3}, 0, "cc", "bbb"])
    while following is not None:
        acked, following = ack_success(following, _local(worker_id), next(outputs))
        assert acked
    hm.signal(handle.id, "go", None)
    (turn,) = claim(queue="default", worker_id=worker_id, limit=1, lease_seconds=60)
    assert run_turn(turn, _local(worker_id)) is None
    assert handle.result(timeout=1) == [0, "cc", "bbb"]


@FUZZ
@given(value=values)
def test_jsonb_view_is_what_a_jsonb_column_gives_back(value: Any) -> None:
    try:
        data = to_json(value)
    except (TypeError, ValueError):
        return  # refused before anything is stored
    with connection.cursor() as cursor:
        cursor.execute("SELECT (%s::jsonb)::text", [json.dumps(data)])
        stored = json.loads(cursor.fetchone()[0])
    # Compared as text, so key order and int-versus-float count too.
    assert json.dumps(jsonb_view(data)) == json.dumps(stored)
