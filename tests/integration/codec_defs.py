"""Definitions for the codec and redaction tests: every kind of stored user value.

Worker subprocesses import this module with `--import tests.integration.codec_defs`.
"""

from __future__ import annotations

from typing import Any

import hotmesh_django as hm
from tests.activities import FAST, bump

# A string no engine code writes, to look for in raw rows.
MARK = "zebra-7f3a-marker"
SECRET = {"note": MARK, "password": f"pw-{MARK}"}


@hm.activity(name="codec.shout", retry=FAST)
def shout(secret: dict[str, Any]) -> dict[str, Any]:
    return {"echo": secret, "loud": secret["note"].upper()}


@hm.activity(name="codec.flaky", retry=FAST)
def flaky(key: str, note: str) -> str:
    """Fail the first call (its error, with the note, is journaled), then succeed."""
    if bump(key) == 1:
        raise ValueError(f"first try fails for note={note}")
    return note


@hm.activity(name="codec.boom", retry=hm.RetryPolicy(max_attempts=1))
def boom(note: str) -> None:
    raise ValueError(f"boom {note} password={note}")


@hm.workflow(name="codec.kid")
def kid(note: str) -> dict[str, str]:
    return {"kid": note}


@hm.workflow(name="codec.everything")
def everything(key: str, secret: dict[str, Any]) -> dict[str, Any]:
    """Arguments, results, a retried and a failed step, a child, a recorded value, a
    signal and published state: each stored value carries the marker."""
    hm.set_state(stage="started", secret=secret)
    loud = shout(secret)
    again = flaky(f"{key}:flaky", secret["note"])
    try:
        boom(secret["note"])
    except hm.ActivityFailed as exc:
        caught = exc.message
    child = kid(secret["note"])
    got = hm.wait_for_signal("go")
    hm.set_state(stage="done", got=got)
    return {"loud": loud, "again": again, "caught": caught, "child": child, "got": got}


@hm.workflow(name="codec.fails")
def fails(note: str) -> None:
    raise RuntimeError(f"workflow gave up on {note}")


@hm.workflow(name="codec.waits")
def waits(secret: dict[str, Any]) -> dict[str, Any]:
    hm.set_state(secret=secret)
    return {"secret": secret, "got": hm.wait_for_signal("go")}
