"""LISTEN/NOTIFY: wake-ups for workers and for callers waiting on a result.

Channels: `hotmesh` carries "q:<queue>" (new ready work), "t:<epoch>" (a timer was
set for that time) and "c:<command>" (control); `hotmesh_done` carries the primary
key of a job that just finished. NOTIFY is transactional, so a listener never wakes
before the row it is told about is visible.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

import psycopg
from django.db import DatabaseError, InterfaceError, connections
from django.db import OperationalError as DjangoOperationalError

from hotmesh_django.conf import settings

if TYPE_CHECKING:
    from hotmesh_django.models import Job

logger = logging.getLogger(__name__)

WORK_CHANNEL = "hotmesh"
DONE_CHANNEL = "hotmesh_done"
# Even with NOTIFY, look again this often: a notification can be missed when the
# listening connection drops, or never sent behind a transaction-mode pooler.
RESULT_POLL_SECONDS = 1.0


@cache
def tables() -> dict[str, str]:
    """Return the quoted table names raw SQL in the engine uses."""
    from hotmesh_django import models

    quote = connections["default"].ops.quote_name
    return {
        name: quote(model._meta.db_table)
        for name, model in {
            "job": models.Job,
            "activity": models.Activity,
            "stream": models.Stream,
            "journal": models.Journal,
            "signal": models.Signal,
            "human_task": models.HumanTask,
            "worker": models.Worker,
            "queue": models.Queue,
        }.items()
    }


def connect_raw(using: str = "default") -> psycopg.Connection[Any]:
    """Open a plain autocommit psycopg connection to the same database as `using`."""
    params = dict(connections[using].get_connection_params())
    for key in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(key, None)
    return psycopg.connect(**params, autocommit=True)


# The longest pause between tries while a waiter's connection is lost.
_RECONNECT_MAX_SECONDS = 2.0


def wait_for_job(workflow_id: str, *, deadline: float | None, using: str) -> Job | None:
    """Return the finished Job, or None when `deadline` (monotonic) passes first.

    A wait outlives a lost connection (a database restart, a killed session), as a
    worker does: it connects again with backoff until the job is seen finished or
    the deadline passes. Inside the caller's transaction.atomic() it cannot (that
    transaction died with the session), so the error is raised there.
    """
    failures = 0
    while True:
        try:
            return _wait_for_job(workflow_id, deadline=deadline, using=using)
        except (psycopg.OperationalError, DjangoOperationalError, InterfaceError) as exc:
            if not _connection_lost(exc):
                raise  # a wrong password, a missing database, a statement timeout
            if connections[using].in_atomic_block and not isinstance(exc, psycopg.Error):
                raise  # the caller's own session: its transaction died with it
            failures += 1
            pause = min(0.1 * 2**failures, _RECONNECT_MAX_SECONDS)
            if deadline is not None:
                pause = min(pause, max(0.0, deadline - time.monotonic()))
            logger.warning(
                "connection lost while waiting for job %r, connecting again in %.1f s: %s",
                workflow_id,
                pause,
                exc,
            )
            with contextlib.suppress(DatabaseError):
                connections[using].close()
            time.sleep(pause)
            if deadline is not None and time.monotonic() >= deadline:
                return None


# SQLSTATE classes that mean the session itself ended: connection exceptions (08) and
# operator intervention (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot
# connect now).
SESSION_ENDED = ("08", "57P01", "57P02", "57P03")


def _connection_lost(exc: BaseException) -> bool:
    """Whether `exc` (psycopg's, or Django's wrapping one) says a connection was lost,
    or could not be made (no SQLSTATE: refused, unreachable, closed under us)."""
    error = exc if isinstance(exc, psycopg.Error) else exc.__cause__
    state = getattr(error, "sqlstate", None) or ""
    return not state or state.startswith(SESSION_ENDED)


def _wait_for_job(workflow_id: str, *, deadline: float | None, using: str) -> Job | None:
    from hotmesh_django.exceptions import JobNotFound
    from hotmesh_django.models import FINISHED_STATUSES, Job

    def finished() -> Job | None:
        job = Job.objects.using(using).filter(workflow_id=workflow_id).first()
        if job is None:
            raise JobNotFound(f"No job has workflow_id {workflow_id!r}.")
        return job if job.status in FINISHED_STATUSES else None

    job = finished()
    if job is not None:
        return job
    if not settings.listen:
        return _poll_for_job(finished, deadline)
    # LISTEN, then mark the job watched (finishing only notifies watched jobs), then
    # look again: a completion before the mark is seen by the look, one after it
    # notifies us.
    with connect_raw(using) as conn:
        conn.execute(f"LISTEN {DONE_CHANNEL}")
        conn.execute(
            f"UPDATE {tables()['job']} SET watched = true "  # noqa: S608 - table from _meta
            "WHERE workflow_id = %s AND NOT watched",
            [workflow_id],
        )
        while True:
            job = finished()
            if job is not None:
                return job
            wait = RESULT_POLL_SECONDS
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                wait = min(wait, remaining)
            for _ in conn.notifies(timeout=wait, stop_after=1):
                pass


def _poll_for_job(finished: Callable[[], Job | None], deadline: float | None) -> Job | None:
    """Wait for `finished()` by polling: quickly at first, then every poll interval."""
    wait = 0.01
    while True:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            wait = min(wait, remaining)
        time.sleep(wait)
        job = finished()
        if job is not None:
            return job
        wait = min(wait * 2, settings.poll_interval_seconds)
