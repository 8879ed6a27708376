"""Workflows that wait for people (hm.wait_for_human), for the human-task tests."""

from __future__ import annotations

from typing import Any

import hotmesh_django as hm
from tests import activities as a


@hm.workflow(name="t.human.approval")
def approval(amount: int, timeout: float | None = None) -> dict[str, Any]:
    try:
        answer = hm.wait_for_human("approvers", {"amount": amount}, timeout=timeout)
    except hm.HumanTaskTimeout as exc:
        return {"timed_out": str(exc)}
    return {"answer": answer}


@hm.workflow(name="t.human.two_steps")
def two_steps() -> list[Any]:
    first = hm.wait_for_human("approvers", {"stage": 1})
    total = a.add(1, 2)
    second = hm.wait_for_human("auditors", {"stage": 2, "first": first})
    return [first, total, second]


@hm.workflow(name="t.human.uncaught")
def uncaught() -> Any:
    return hm.wait_for_human("approvers", timeout=0.2)


@hm.workflow(name="t.human.as_signal_timeout")
def as_signal_timeout() -> str:
    try:
        hm.wait_for_human("approvers", timeout=0)
    except hm.SignalTimeout as exc:  # HumanTaskTimeout is one
        return type(exc).__name__
    return "answered"


@hm.workflow(name="t.human.bad_data")
def bad_data() -> Any:
    return hm.wait_for_human("approvers", {"not json": object()})
