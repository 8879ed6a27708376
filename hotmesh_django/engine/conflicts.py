"""Run a short transaction again when Postgres aborted it to break a deadlock.

Some lock orders cannot be made one: a step's ack locks its message and then queues
its job's turn, while a job that ends (and a cascade over its children) locks the job
and then deletes its messages. Postgres breaks such a cycle by aborting one side
(SQLSTATE 40P01). Each engine transaction is guarded and idempotent, so the aborted
side may simply run again; left alone, its message would wait for its lease to run
out (30 s by default) and a step's activity would run a second time.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import OperationalError, connection

logger = logging.getLogger(__name__)

T = TypeVar("T")

# deadlock_detected and serialization_failure: the transaction did nothing.
_CONFLICTS = ("40P01", "40001")
ATTEMPTS = 3


def is_conflict(exc: BaseException) -> bool:
    """Whether `exc` is Postgres aborting a transaction to break a lock conflict."""
    return getattr(exc.__cause__, "sqlstate", None) in _CONFLICTS


def retry_on_conflict(run: Callable[[], T], *, what: str, attempts: int = ATTEMPTS) -> T:
    """Return `run()`, run again (after a short random pause) when Postgres aborted it
    to break a deadlock. Inside a caller's transaction nothing is retried: that whole
    transaction was aborted, and only its owner can run it again."""
    if connection.in_atomic_block:
        return run()
    for attempt in range(1, attempts + 1):
        try:
            return run()
        except OperationalError as exc:
            if attempt == attempts or not is_conflict(exc):
                raise
            logger.info("%s aborted by a deadlock, run again attempt=%s", what, attempt + 1)
            # Apart, so the two sides do not meet again at once.
            time.sleep(random.uniform(0.005, 0.05) * attempt)  # noqa: S311 - not for secrets
    raise AssertionError("unreachable")  # pragma: no cover
