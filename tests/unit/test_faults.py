"""HOTMESH_FAULTS parsing and the two actions of a fault point."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from django.db import OperationalError, connection, transaction

from hotmesh_django import faults
from hotmesh_django.faults import DISCONNECT, EXIT, Fault


@pytest.fixture
def plan(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Fault]]:
    """A plan for this process, with fresh counts; put back as it was afterwards."""
    planned: dict[str, Fault] = {}
    monkeypatch.setattr(faults, "_plan", planned)
    monkeypatch.setattr(faults, "_counts", {})
    monkeypatch.setattr(faults, "_enabled", True)
    yield planned


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", {}),
        ("ack_commit:3", {"ack_commit": Fault(3, EXIT)}),
        ("*:5", {"*": Fault(5, EXIT)}),
        (" claim:2 , turn_commit:1 ", {"claim": Fault(2), "turn_commit": Fault(1)}),
        ("ack_send:3:disconnect", {"ack_send": Fault(3, DISCONNECT)}),
        (
            "claim_send:1:exit,turn_write:2:disconnect,",
            {
                "claim_send": Fault(1, EXIT),
                "turn_write": Fault(2, DISCONNECT),
            },
        ),
    ],
)
def test_parse(spec: str, expected: dict[str, Fault]) -> None:
    assert faults.parse(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ack_commit", "is not name:N or name:N:action"),
        (":3", "is not name:N or name:N:action"),
        ("a:1:disconnect:x", "is not name:N or name:N:action"),
        ("ack_commit:three", "'three' in 'ack_commit:three' is not an integer"),
        ("ack_commit:0", "must be at least 1"),
        (
            "ack_send:3:kill",
            "the action 'kill' in 'ack_send:3:kill' is not one of exit, disconnect",
        ),
        ("ack_send:3:", "the action '' in"),
        ("claim:1,claim:2", "'claim' is planned twice"),
    ],
)
def test_parse_rejects(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match="HOTMESH_FAULTS") as caught:
        faults.parse(spec)
    assert message in str(caught.value)


def test_points_are_free_when_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults, "_enabled", False)
    monkeypatch.setattr(faults, "_plan", {"claim_send": Fault(1, EXIT)})
    faults.point("claim_send")  # would exit if it looked at the plan


def test_the_wildcard_and_the_recording_skip_the_statement_points(
    plan: dict[str, Fault],
) -> None:
    # These fire on every idle poll: counting them would make `*:N` depend on timing.
    plan["*"] = Fault(2, EXIT)
    with faults.record() as names:
        for _ in range(3):
            faults.point("claim_send")
            faults.point("ack_send")
            faults.point("turn_write")
        faults.point("claim")
    assert names == ["claim"]
    assert faults._counts == {"claim_send": 3, "ack_send": 3, "turn_write": 3, "claim": 1, "*": 1}


def test_exit_ends_the_process_at_the_nth_hit() -> None:
    code = "from hotmesh_django import faults\nfor i in range(5):\n    faults.point('claim')\n"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, faults.ENV: "claim:3"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == faults.EXIT_CODE
    assert "exit at point claim (#3 overall, #3 of its name)" in done.stderr


@pytest.mark.django_db(transaction=True)
def test_disconnect_kills_the_session_and_the_next_statement_fails(
    plan: dict[str, Fault], capsys: pytest.CaptureFixture[str]
) -> None:
    plan["ack_send"] = Fault(2, DISCONNECT)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    faults.point("ack_send")  # the first hit: nothing happens
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    faults.point("ack_send")  # returns, the session gone
    with pytest.raises(OperationalError) as lost, connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    # What a statement reads when its session is killed: admin_shutdown.
    assert getattr(lost.value.__cause__, "sqlstate", None) == "57P01"
    faults.point("ack_send")  # fires once only
    connection.close()  # what the engine does when it sees a lost session
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid(), %s IN (SELECT pid FROM pg_stat_activity)", [pid])
        new_pid, old_alive = cursor.fetchone()
    assert new_pid != pid and not old_alive
    assert f"hotmesh fault: session {pid} terminated" in capsys.readouterr().err


@pytest.mark.django_db(transaction=True)
def test_disconnect_inside_a_transaction_rolls_it_back(plan: dict[str, Fault]) -> None:
    plan["turn_write"] = Fault(1, DISCONNECT)
    with pytest.raises(OperationalError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("CREATE TABLE fault_probe (x int)")
        faults.point("turn_write")
        cursor.execute("INSERT INTO fault_probe VALUES (1)")
    connection.close()
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('fault_probe')")
        assert cursor.fetchone() == (None,)
