"""Workflows the schedule tests start; worker subprocesses import this module."""

from __future__ import annotations

import hotmesh_django as hm


@hm.workflow(name="sched.ping")
def ping(tag: str = "") -> str:
    return f"pong {tag}".strip()


# Declared with the decorator: sync_declared() makes its Schedule row.
@hm.workflow(name="sched.daily", schedule="0 9 * * *", timezone="Europe/Paris")
def daily() -> str:
    return "daily"
