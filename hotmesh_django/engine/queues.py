"""Queues as a cluster-wide resource: pause/resume, concurrency and rate limits.

Limits come from HOTMESH_QUEUES, e.g. {"emails": {"concurrency": 2, "rate": "100/m"}},
and hold across every worker on every host: a claim on a limited queue runs under a
transaction-level advisory lock for that queue, counts what is running, takes tokens
from the queue's bucket row and claims at most what is left. Queues without limits
never take that lock, so the common path keeps its speed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import uuid
from functools import cache
from typing import Any

from django.db import connection, transaction
from django.db.models import Count
from django.db.models.functions import Now

from hotmesh_django import registry
from hotmesh_django.conf import settings
from hotmesh_django.definitions import check_queue_name
from hotmesh_django.engine.claim import Claimed, claim, claim_ids
from hotmesh_django.engine.notify import WORK_CHANNEL, tables
from hotmesh_django.exceptions import HotmeshError
from hotmesh_django.models import Job, Queue, Stream, Worker

logger = logging.getLogger(__name__)

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*$")
_UNIT_SECONDS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}


class UnknownQueue(HotmeshError, LookupError):
    """No definition, setting or job uses this queue name."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Rate:
    """At most `count` starts per `seconds`."""

    count: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds


def parse_rate(text: str) -> Rate:
    """Parse "100/m", "10/s", "5/10s", "1000/h"; raise ValueError otherwise."""
    match = _RATE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"Bad rate {text!r}: write COUNT/PERIOD, e.g. '100/m', '10/s', '5/10s', '1000/h'."
        )
    count, multiplier, unit = int(match[1]), int(match[2] or 1), match[3]
    if count < 1 or multiplier < 1:
        raise ValueError(f"Bad rate {text!r}: the count and period must be positive.")
    return Rate(count=count, seconds=float(multiplier * _UNIT_SECONDS[unit]))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Limits:
    concurrency: int | None = None
    rate: Rate | None = None
    # At most this many running at once per concurrency_key (e.g. per tenant).
    key_concurrency: int | None = None


def validate_queue_options(name: object, options: object) -> list[str]:
    """Return what is wrong with one HOTMESH_QUEUES entry (empty when fine)."""
    problems = []
    try:
        check_queue_name(name)
    except ValueError as exc:
        problems.append(f"HOTMESH_QUEUES has the key {name!r}, but a {exc}")
    if not isinstance(options, dict):
        return [f"HOTMESH_QUEUES[{name!r}] must be a dict, not {options!r}."]
    unknown = set(options) - {"concurrency", "rate", "key_concurrency"}
    if unknown:
        problems.append(
            f"HOTMESH_QUEUES[{name!r}] has unknown option(s) {', '.join(sorted(unknown))}; "
            "expected 'concurrency', 'rate' and/or 'key_concurrency'."
        )
    for key in ("concurrency", "key_concurrency"):
        value = options.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            problems.append(
                f"HOTMESH_QUEUES[{name!r}][{key!r}] must be an integer >= 1, not {value!r}."
            )
    if "rate" in options:
        try:
            parse_rate(options["rate"])
        except ValueError as exc:
            problems.append(f"HOTMESH_QUEUES[{name!r}]['rate']: {exc}")
    return problems


def limits_for(queue: str) -> Limits | None:
    """Return the limits HOTMESH_QUEUES sets for `queue`, or None for none."""
    options = settings.queues.get(queue)
    if not options:
        return None
    rate = options.get("rate")
    limits = Limits(
        concurrency=options.get("concurrency"),
        rate=parse_rate(rate) if rate else None,
        key_concurrency=options.get("key_concurrency"),
    )
    return limits if (limits.concurrency or limits.rate or limits.key_concurrency) else None


@cache
def _lock_key(queue: str) -> str:
    return f"hotmesh:queue:{queue}"


def claim_limited(
    *, queue: str, limits: Limits, worker_id: uuid.UUID, limit: int, lease_seconds: float
) -> list[Claimed]:
    """Claim from a limited queue without breaking its limits on any host."""
    t = tables()
    # Nothing ready: skip the lock and the counting (an index probe on the ready index).
    if not Stream.objects.filter(queue=queue, status="READY").exists():
        return []
    with transaction.atomic(), connection.cursor() as cursor:
        # Serialise claimers of this queue only, for the rest of this transaction.
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [_lock_key(queue)])
        room = limit
        if limits.concurrency is not None:
            cursor.execute(
                f"SELECT count(*) FROM {t['stream']} "  # noqa: S608 - table from _meta
                "WHERE queue = %s AND status = 'RUNNING'",
                [queue],
            )
            running = cursor.fetchone()[0]
            room = min(room, limits.concurrency - running)
        tokens = None
        if limits.rate is not None and room > 0:
            tokens = _refill(queue, limits.rate)
            room = min(room, math.floor(tokens))
        if room <= 0:
            return []
        if limits.key_concurrency is None:
            batch = claim(queue=queue, worker_id=worker_id, limit=room, lease_seconds=lease_seconds)
        else:
            ids = _choose_per_key(cursor, queue, limits.key_concurrency, room)
            batch = claim_ids(ids=ids, worker_id=worker_id, lease_seconds=lease_seconds)
        if tokens is not None and batch:
            Queue.objects.filter(name=queue).update(tokens=tokens - len(batch))
        return batch


# Among the first ready rows of the queue (bounded, in claim order), pick those whose
# key still has room: running + rank within the key <= the per-key limit. Rows
# without a key are unlimited. Runs under the queue's advisory lock, so no other
# claimer of this queue can race it.
_PER_KEY = """
WITH running AS (
    SELECT concurrency_key, count(*) AS n FROM {stream}
     WHERE queue = %(queue)s AND status = 'RUNNING' AND concurrency_key IS NOT NULL
     GROUP BY concurrency_key
), ready AS (
    SELECT id, priority, concurrency_key FROM {stream}
     WHERE queue = %(queue)s AND status = 'READY'
     ORDER BY priority DESC, id
     LIMIT %(window)s
), ranked AS (
    SELECT id, priority, concurrency_key,
           row_number() OVER (PARTITION BY concurrency_key ORDER BY priority DESC, id) AS rank
      FROM ready
)
SELECT r.id FROM ranked AS r LEFT JOIN running AS x USING (concurrency_key)
 WHERE r.concurrency_key IS NULL OR r.rank + coalesce(x.n, 0) <= %(per_key)s
 ORDER BY r.priority DESC, r.id
 LIMIT %(limit)s
"""


def _choose_per_key(cursor: Any, queue: str, per_key: int, limit: int) -> list[int]:
    params = {"queue": queue, "per_key": per_key, "limit": limit, "window": max(1000, limit * 10)}
    cursor.execute(_PER_KEY.format(**tables()), params)
    return [row[0] for row in cursor.fetchall()]


def _refill(queue: str, rate: Rate) -> float:
    """Top up the queue's token bucket for the time passed; return the tokens now."""
    Queue.objects.get_or_create(name=queue)
    row = (
        Queue.objects.select_for_update()
        .filter(name=queue)
        .values_list("tokens", "refilled_at")
        .get()
    )
    with connection.cursor() as c:
        c.execute("SELECT now()")
        now = c.fetchone()[0]
    tokens, refilled_at = row
    if tokens is None or refilled_at is None:
        tokens = float(rate.count)
    else:
        elapsed = max(0.0, (now - refilled_at).total_seconds())
        tokens = min(float(rate.count), tokens + elapsed * rate.per_second)
    Queue.objects.filter(name=queue).update(tokens=tokens, refilled_at=now)
    return float(tokens)


def known_queues() -> set[str]:
    """Every queue a definition, HOTMESH_QUEUES, a job, a Queue row or a worker's
    --queues names (the admin's Queues page lists each of them)."""
    names = registry.queues() | set(settings.queues)
    names |= set(Queue.objects.values_list("name", flat=True))
    names |= set(Job.objects.values_list("queue", flat=True).distinct())
    for served in Worker.objects.values_list("queues", flat=True):
        names |= {q for q in served or [] if isinstance(q, str) and q != "*"}
    return names


def set_paused(queue: str, paused: bool, *, force: bool = False, actor: str = "") -> bool:
    """Pause or resume `queue` on every worker; return whether it changed.

    Raise UnknownQueue for a name nothing uses (a typo), unless `force`. `actor`
    (who asked) goes into the log line. Raise ValueError for what cannot name a queue.
    """
    check_queue_name(queue)
    if not force and queue not in known_queues():
        raise UnknownQueue(
            f"Unknown queue {queue!r}: no definition, HOTMESH_QUEUES entry or job uses it. "
            f"Known queues: {', '.join(sorted(known_queues())) or 'none'}."
        )
    with transaction.atomic():
        Queue.objects.get_or_create(name=queue)
        changed = bool(
            Queue.objects.filter(name=queue)
            .exclude(paused=paused)
            .update(paused=paused, updated_at=Now())
        )
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [WORK_CHANNEL, "c:queues"])
            if not paused:
                cursor.execute("SELECT pg_notify(%s, %s)", [WORK_CHANNEL, f"q:{queue}"])
    logger.info(
        "queue %s queue=%s changed=%s by=%s",
        "paused" if paused else "resumed",
        queue,
        changed,
        actor or "-",
    )
    return changed


def paused_queues() -> set[str]:
    return set(Queue.objects.filter(paused=True).values_list("name", flat=True))


def depth(queue: str) -> dict[str, int]:
    """Return {status: count} of the queue's stream messages."""
    rows = Stream.objects.filter(queue=queue).values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in rows.order_by()}
