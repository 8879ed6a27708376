"""HOTMESH_CODEC end to end: real workflows through a real worker, then the raw rows."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.apps import apps
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client, override_settings
from django.urls import reverse

import hotmesh_django as hm
from hotmesh_django.handles import JobHandle
from hotmesh_django.models import (
    Activity,
    HumanTask,
    Job,
    JobStatus,
    Stream,
    StreamKind,
    StreamStatus,
)
from hotmesh_django.redaction import MASK
from hotmesh_django.serialization import is_sealed
from hotmesh_django.testing import skip_time
from tests.conftest import InProcessWorker, wait_until
from tests.integration import codec_defs as d
from tests.integration import human_defs as h

pytestmark = pytest.mark.django_db(transaction=True)

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()
KEY_WRONG = Fernet.generate_key().decode()
FERNET = "hotmesh_django.codecs.FernetCodec"
TABLES = {
    "hotmesh_django_job",
    "hotmesh_django_activity",
    "hotmesh_django_journal",
    "hotmesh_django_signal",
    "hotmesh_django_stream",
}


@contextmanager
def fernet(*keys: str) -> Iterator[None]:
    with override_settings(HOTMESH_CODEC=FERNET, HOTMESH_CODEC_KEYS=list(keys)):
        yield


@contextmanager
def codec_off() -> Iterator[None]:
    with override_settings(HOTMESH_CODEC=None):
        yield


def plaintext_hits(marker: str = d.MARK) -> dict[str, int]:
    """Count, per hotmesh table, the rows whose text holds `marker` in any case."""
    hits = {}
    with connection.cursor() as cursor:
        for model in apps.get_app_config("hotmesh_django").get_models():
            table = connection.ops.quote_name(model._meta.db_table)
            cursor.execute(
                f"SELECT count(*) FROM {table} AS t WHERE strpos(lower(t::text), %s) > 0",
                [marker.lower()],
            )
            row = cursor.fetchone()
            if row and row[0]:
                hits[model._meta.db_table] = row[0]
    return hits


def raw(table: str, column: str, where: str, params: list[Any]) -> list[Any]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE {where} ORDER BY id", params)
        return [json.loads(v) if isinstance(v, str) else v for (v,) in cursor.fetchall()]


def waiting_for_signal(handle: JobHandle) -> Callable[[], bool]:
    return lambda: Activity.objects.filter(
        job__workflow_id=handle.id, kind="SIGNAL", status=JobStatus.WAITING
    ).exists()


def run_everything() -> dict[str, Any]:
    """Start one of each kind of job, let the worker run them, and return the handles."""
    handle = d.everything.start("k1", d.SECRET)
    failing = d.fails.start(d.MARK)
    parked = d.waits.start(d.SECRET)
    # Stays queued: its message (and payload) must be sealed too.
    delayed = d.shout.using(delay=3600).start(d.SECRET)
    wait_until(waiting_for_signal(handle))
    wait_until(waiting_for_signal(parked))
    handle.signal("go", {"reply": d.MARK, "token": f"t-{d.MARK}"})
    parked.signal("never-awaited", {"left": d.MARK})  # stays buffered
    return {"handle": handle, "failing": failing, "parked": parked, "delayed": delayed}


EXPECTED = {
    "loud": {"echo": d.SECRET, "loud": d.MARK.upper()},
    "again": d.MARK,
    "caught": f"boom {d.MARK} password={d.MARK}",
    "child": {"kid": d.MARK},
    "got": {"reply": d.MARK, "token": f"t-{d.MARK}"},
}


def check_round_trip(jobs: dict[str, Any]) -> None:
    handle = jobs["handle"]
    assert handle.result(timeout=30) == EXPECTED
    assert handle.state() == {"stage": "done", "secret": d.SECRET, "got": EXPECTED["got"]}
    events = handle.journal()
    received = [e for e in events if e["event"] == "signal_received"]
    assert received[0]["data"]["payload"] == EXPECTED["got"]
    retried = [e for e in events if e["event"] == "step_retried"]
    assert d.MARK in retried[0]["data"]["error"]["message"]
    steps = handle.activities()
    assert steps[0]["input"] == {"args": [d.SECRET], "kwargs": {}}
    assert steps[0]["output"] == EXPECTED["loud"]
    assert d.MARK in steps[2]["error"]["message"]
    with pytest.raises(hm.WorkflowFailed, match=f"workflow gave up on {d.MARK}"):
        jobs["failing"].result(timeout=30)
    assert jobs["parked"].state() == {"secret": d.SECRET}


def test_with_the_codec_on_no_plaintext_reaches_any_table(worker: InProcessWorker) -> None:
    with fernet(KEY_A):
        jobs = run_everything()
        check_round_trip(jobs)
        hits = plaintext_hits()
        # Every sealed column holds envelopes, and Fernet tokens at that.
        inputs = raw("hotmesh_django_job", "input", "true", [])
        assert inputs and all(is_sealed(v) for v in inputs)
        payloads = raw("hotmesh_django_stream", "payload", "payload IS NOT NULL", [])
        assert payloads and all(is_sealed(v) for v in payloads)
    assert hits == {}, hits


def test_human_task_data_and_answers_are_sealed(worker: InProcessWorker) -> None:
    """What a workflow shows a person, and their answer, are user values too."""
    carol = User.objects.create_user("carol")
    carol.groups.add(Group.objects.create(name="approvers"))
    with fernet(KEY_A):
        handle = h.approval.start(d.MARK)
        task = wait_until(lambda: HumanTask.objects.filter(job__workflow_id=handle.id).first())
        wait_until(lambda: handle.status() == JobStatus.WAITING)
        hm.claim_task(task.pk, carol)
        hm.resolve_task(task.pk, {"note": d.MARK}, carol)
        assert handle.result(timeout=30) == {"answer": {"note": d.MARK}}
        task.refresh_from_db()
        assert (task.data, task.answer) == ({"amount": d.MARK}, {"note": d.MARK})
        stored = raw("hotmesh_django_humantask", "data", "true", [])
        stored += raw("hotmesh_django_humantask", "answer", "true", [])
        assert len(stored) == 2 and all(is_sealed(v) for v in stored)
        hits = plaintext_hits()
    assert hits == {}, hits


def test_the_scan_finds_plaintext_when_the_codec_is_off(worker: InProcessWorker) -> None:
    """The control for the test above: the same run, stored plain, is found."""
    with codec_off():
        jobs = run_everything()
        check_round_trip(jobs)
    assert set(plaintext_hits()) >= TABLES


def test_the_admin_shows_sealed_values_decoded_and_masked(
    worker: InProcessWorker, admin_client: Client
) -> None:
    with fernet(KEY_A):
        jobs = run_everything()
        jobs["handle"].result(timeout=30)
        job = Job.objects.get(workflow_id=jobs["handle"].id)
        html = admin_client.get(
            reverse("admin:hotmesh_django_job_change", args=[job.pk])
        ).content.decode()
        assert d.MARK in html  # the note: decoded
        assert f"pw-{d.MARK}" not in html and f"t-{d.MARK}" not in html  # masked
        assert MASK in html
        assert "Published state" in html and "&quot;stage&quot;: &quot;done&quot;" in html
        assert "Cannot decode" not in html
        failed = Job.objects.get(workflow_id=jobs["failing"].id)
        html = admin_client.get(
            reverse("admin:hotmesh_django_job_change", args=[failed.pk])
        ).content.decode()
        assert f"workflow gave up on {d.MARK}" in html


def _token_opens_with(value: dict[str, Any], key: str) -> bool:
    try:
        Fernet(key).decrypt(value["v"].encode())
    except InvalidToken:
        return False
    return True


def test_key_rotation_and_reseal(worker: InProcessWorker) -> None:
    with fernet(KEY_A):
        handle = d.waits.start(d.SECRET)
        wait_until(waiting_for_signal(handle))
    with fernet(KEY_B, KEY_A):  # a new key first; the old one still decrypts
        handle.signal("go", d.MARK)
        assert handle.result(timeout=30) == {"secret": d.SECRET, "got": d.MARK}
        [old] = raw("hotmesh_django_job", "input", "workflow_id = %s", [handle.id])
        [new] = raw("hotmesh_django_signal", "payload", "true", [])
        assert _token_opens_with(old, KEY_A) and not _token_opens_with(old, KEY_B)
        assert _token_opens_with(new, KEY_B) and not _token_opens_with(new, KEY_A)
        out = io.StringIO()
        call_command("hotmesh_reseal", stdout=out)
        assert "hotmesh_django_job.input: 1 rewritten" in out.getvalue()
    with fernet(KEY_B):  # the old key is gone
        assert handle.result(timeout=5) == {"secret": d.SECRET, "got": d.MARK}
        assert handle.state() == {"secret": d.SECRET}
        assert [e["event"] for e in handle.journal()][-1] == "completed"
        [old] = raw("hotmesh_django_job", "input", "workflow_id = %s", [handle.id])
        assert _token_opens_with(old, KEY_B)
    assert plaintext_hits() == {}


def test_plain_rows_from_before_the_codec_are_read_then_sealed(worker: InProcessWorker) -> None:
    with codec_off():
        handle = d.waits.start(d.SECRET)
        wait_until(waiting_for_signal(handle))
    with fernet(KEY_A):
        handle.signal("go", d.MARK)  # the turn reads the plain input, writes sealed
        assert handle.result(timeout=30) == {"secret": d.SECRET, "got": d.MARK}
        [before] = raw("hotmesh_django_job", "input", "workflow_id = %s", [handle.id])
        assert not is_sealed(before)
        assert plaintext_hits()  # the old rows
        call_command("hotmesh_reseal", stdout=io.StringIO())
        assert plaintext_hits() == {}
        assert handle.result(timeout=5)["secret"] == d.SECRET
        # And back, before turning the codec off.
        call_command("hotmesh_reseal", plain=True, stdout=io.StringIO())
    with codec_off():
        assert handle.result(timeout=5)["got"] == d.MARK
        [after] = raw("hotmesh_django_job", "input", "workflow_id = %s", [handle.id])
        assert after == {"args": [d.SECRET], "kwargs": {}}


def test_reseal_refuses_without_a_codec_and_reports_unreadable_rows() -> None:
    # codec_off(): the suite may run with the codec on (HOTMESH_TEST_CODEC=1).
    with codec_off(), pytest.raises(CommandError, match="HOTMESH_CODEC is not set"):
        call_command("hotmesh_reseal")
    with fernet(KEY_A):
        d.waits.start(d.SECRET)
    with fernet(KEY_WRONG), pytest.raises(CommandError, match="could not be unsealed"):
        call_command("hotmesh_reseal", stdout=io.StringIO())


def test_reading_sealed_values_without_the_codec_is_a_clear_error(
    worker: InProcessWorker, admin_client: Client
) -> None:
    with fernet(KEY_A):
        handle = d.kid.start(d.MARK)
        assert handle.result(timeout=30) == {"kid": d.MARK}
    with codec_off():
        with pytest.raises(hm.CodecError, match="no codec is set in this process"):
            handle.result(timeout=5)
        job = Job.objects.get(workflow_id=handle.id)
        html = admin_client.get(
            reverse("admin:hotmesh_django_job_change", args=[job.pk])
        ).content.decode()
        assert "Cannot decode this value" in html
        listing = admin_client.get(reverse("admin:hotmesh_django_job_changelist"))
        assert listing.status_code == 200


def test_a_worker_with_a_wrong_key_puts_jobs_aside_without_failing_them(
    start_worker: Callable[..., InProcessWorker], caplog: pytest.LogCaptureFixture
) -> None:
    with fernet(KEY_A):
        handle = d.waits.start(d.SECRET)
        task = d.shout.start(d.SECRET)
    with fernet(KEY_WRONG), caplog.at_level(logging.ERROR):
        wrong = start_worker()
        turn_parked = Stream.objects.filter(
            job__workflow_id=handle.id, kind=StreamKind.TIMER, status=StreamStatus.SCHEDULED
        )
        task_parked = Stream.objects.filter(
            job__workflow_id=task.id, status=StreamStatus.SCHEDULED, attempts=0
        )
        wait_until(lambda: turn_parked.exists() and task_parked.exists())
        with pytest.raises(hm.CodecError, match="None of the HOTMESH_CODEC_KEYS"):
            task.activities()
        assert wrong.thread.is_alive()
        wrong.stop()  # raises if the worker loop died
    assert "cannot unseal stored values, job put aside" in caplog.text
    assert "cannot unseal stored values, step put aside" in caplog.text
    assert not Job.objects.filter(status=JobStatus.FAILED).exists()
    with fernet(KEY_A), skip_time():  # the right key: both go on where they were
        start_worker()
        wait_until(waiting_for_signal(handle))
        handle.signal("go", 1)
        assert handle.result(timeout=30) == {"secret": d.SECRET, "got": 1}
        assert task.result(timeout=30)["loud"] == d.MARK.upper()
    # The attempt the wrong key could not start was not counted.
    assert Activity.objects.get(job__workflow_id=task.id).attempts == 1


def test_a_signal_sealed_with_a_wrong_key_stops_the_turn_not_the_job(
    worker: InProcessWorker, caplog: pytest.LogCaptureFixture
) -> None:
    """A payload the workflow cannot read must not reach it, whatever it catches."""
    with fernet(KEY_A):
        handle = d.waits.start(d.SECRET)
        wait_until(waiting_for_signal(handle))
        with fernet(KEY_WRONG):
            handle.signal("go", d.MARK)  # e.g. a web process deployed with a bad key
        with caplog.at_level(logging.ERROR):
            wait_until(lambda: "cannot unseal stored values, job put aside" in caplog.text)
        assert handle.status() != JobStatus.FAILED
        step = Activity.objects.get(job__workflow_id=handle.id, kind="SIGNAL")
        assert step.status == JobStatus.WAITING  # the signal was not consumed


def test_reseal_dry_run_writes_nothing_and_batches_cover_every_row() -> None:
    with codec_off():
        handles = [d.waits.start({"n": i, "note": d.MARK}) for i in range(5)]
    with fernet(KEY_A):
        out = io.StringIO()
        call_command("hotmesh_reseal", dry_run=True, batch_size=2, stdout=out)
        assert "hotmesh_django_job.input: 5 would be rewritten" in out.getvalue()
        assert plaintext_hits()["hotmesh_django_job"] == 5
        out = io.StringIO()
        call_command("hotmesh_reseal", batch_size=2, stdout=out)  # 2 + 2 + 1 rows
        assert "hotmesh_django_job.input: 5 rewritten" in out.getvalue()
        assert plaintext_hits() == {}
        assert [h.job().input["args"][0]["n"] for h in handles] == list(range(5))
