"""Retention: delete finished jobs, with their steps, journal, signals and messages.

Each batch is one statement in its own short transaction, so pruning a large
backlog never holds many locks for long, and workers and the admin keep going in
between. Active jobs are never touched, and neither are finished jobs whose parent
or any of whose children is still active (the live job may still read them).
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings as django_settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, models, transaction

from hotmesh_django.choices import ACTIVE_STATUSES, FINISHED_STATUSES
from hotmesh_django.conf import settings
from hotmesh_django.models import Job

logger = logging.getLogger(__name__)

# Differs from the rescue and schedule locks: a worker pruning does not hold up
# either of them.
PRUNE_LOCK_KEY = 0x686F746D_707275  # "hotm" "pru"

# auto_prune() runs at most this often per process once it has caught up.
AUTO_PRUNE_INTERVAL_SECONDS = 60.0

DEFAULT_STATUSES: tuple[str, ...] = tuple(FINISHED_STATUSES)

_CANDIDATES = """
SELECT j.id FROM {job} AS j
 WHERE j.status = ANY(%(statuses)s)
   AND j.finished_at < now() - %(age)s
   AND NOT EXISTS (
       SELECT 1 FROM {job} AS p WHERE p.id = j.parent_id AND p.status = ANY(%(active)s))
   AND NOT EXISTS (
       SELECT 1 FROM {job} AS c WHERE c.parent_id = j.id AND c.status = ANY(%(active)s))
"""

_auto_lock = threading.Lock()
_auto_next = 0.0  # monotonic time of the next auto_prune() run in this process


def _relations() -> tuple[list[tuple[str, str]], list[tuple[str, str, list[str]]]]:
    """Return the tables that point at Job: (table, column) to delete from, and
    (table, column, columns-of-rows-deleted-anyway) to set to NULL.

    Read from the model graph, hidden `related_name="+"` relations included, so a
    model that gains a foreign key to Job is pruned with it. Raise RuntimeError for
    an on_delete this one-statement delete cannot honour (PROTECT, RESTRICT, ...).
    """
    quote = connections[DEFAULT_DB_ALIAS].ops.quote_name
    cascade: list[tuple[str, str]] = []
    set_null: list[tuple[type[models.Model], str, str]] = []
    for rel in Job._meta.get_fields(include_hidden=True):
        if not isinstance(rel, models.ForeignObjectRel) or rel.many_to_many:
            continue
        field = rel.field
        table, column = quote(field.model._meta.db_table), quote(str(field.column))
        if rel.on_delete is models.CASCADE:
            cascade.append((table, column))
        elif rel.on_delete is models.SET_NULL:
            set_null.append((field.model, table, column))
        elif rel.on_delete is not models.DO_NOTHING:
            raise RuntimeError(
                f"prune cannot follow {field.model.__name__}.{field.name} "
                f"(on_delete={getattr(rel.on_delete, '__name__', rel.on_delete)}); "
                "use CASCADE, SET_NULL or DO_NOTHING."
            )
    nulls: list[tuple[str, str, list[str]]] = []
    for model, table, column in set_null:
        # A row may both lose its reference and be deleted (a child's parent_id, an
        # activity's child_id); a statement must not modify one row twice.
        gone = [c for t, c in cascade if t == table]
        if model is Job:
            gone.append(quote(str(Job._meta.pk.column)))
        nulls.append((table, column, gone))
    return cascade, nulls


def _delete_sql() -> str:
    """Build the one-batch statement. Only table and column names from the models'
    _meta, quoted, are formatted in; every value is a parameter."""
    cascade, nulls = _relations()
    job = connections[DEFAULT_DB_ALIAS].ops.quote_name(Job._meta.db_table)
    doomed = "(SELECT id FROM doomed)"
    parts = [
        "WITH doomed AS MATERIALIZED (",
        _CANDIDATES.format(job=job).strip(),
        "     LIMIT %(limit)s",
        "       FOR UPDATE OF j SKIP LOCKED",
        ")",
    ]
    for i, (table, column, gone) in enumerate(nulls):
        keep = "".join(f" AND {c} NOT IN {doomed}" for c in gone)
        update = f"UPDATE {table} SET {column} = NULL"  # noqa: S608
        parts.append(f", n{i} AS ({update} WHERE {column} IN {doomed}{keep})")
    for i, (table, column) in enumerate(cascade):
        delete = f"DELETE FROM {table} WHERE {column} IN {doomed}"  # noqa: S608
        parts.append(f", d{i} AS ({delete})")
    parts.append(f"DELETE FROM {job} WHERE id IN {doomed}")  # noqa: S608
    return "\n".join(parts)


def _check(older_than: datetime.timedelta, statuses: Iterable[str], batch_size: int) -> list[str]:
    if not isinstance(older_than, datetime.timedelta):
        raise TypeError(f"older_than must be a timedelta, not {type(older_than).__name__}.")
    if older_than < datetime.timedelta(0):
        raise ValueError(f"older_than must not be negative, not {older_than}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}.")
    chosen = list(dict.fromkeys(statuses))
    unknown = [s for s in chosen if s not in FINISHED_STATUSES]
    if unknown or not chosen:
        raise ValueError(
            f"prune deletes only finished jobs; statuses must be some of "
            f"{', '.join(FINISHED_STATUSES)}, not {', '.join(map(str, unknown)) or 'none'}."
        )
    return chosen


def prune(
    older_than: datetime.timedelta,
    statuses: Sequence[str] = DEFAULT_STATUSES,
    batch_size: int = 1000,
    dry_run: bool = False,
) -> int:
    """Delete jobs in `statuses` that finished more than `older_than` ago; return how many.

    Their activities, journal, signals and stream messages go with them; references
    from jobs that stay (a child's parent, a parent step's child) are set to NULL.
    Each batch of up to `batch_size` jobs is one statement in its own transaction,
    skipping rows another transaction has locked. With `dry_run`, delete nothing and
    return how many would go now. Raise ValueError for a negative age, a status that
    is not finished, or a batch size below 1.
    """
    chosen = _check(older_than, statuses, batch_size)
    if dry_run:
        connection = connections[DEFAULT_DB_ALIAS]
        job = connection.ops.quote_name(Job._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT count(*) FROM ({_CANDIDATES.format(job=job)}) AS c",  # noqa: S608
                _params(older_than, chosen, batch_size),
            )
            return int(cursor.fetchone()[0])
    total, _ = _prune(older_than, chosen, batch_size)
    return total


def _params(older_than: datetime.timedelta, statuses: list[str], limit: int) -> dict[str, Any]:
    return {
        "statuses": statuses,
        "age": older_than,
        "active": list(ACTIVE_STATUSES),
        "limit": limit,
    }


def _prune(
    older_than: datetime.timedelta,
    statuses: list[str],
    batch_size: int,
    *,
    max_seconds: float | None = None,
    lock: bool = False,
) -> tuple[int, bool]:
    """Delete in batches; return (how many, whether it stopped with more maybe left).

    `max_seconds` stops after the batch that crosses it. With `lock`, each batch
    first takes an advisory lock and the run stops when another process holds it.
    """
    connection = connections[DEFAULT_DB_ALIAS]
    sql = _delete_sql()
    params = _params(older_than, statuses, batch_size)
    started = time.monotonic()
    total = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            if lock:
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [PRUNE_LOCK_KEY])
                if not cursor.fetchone()[0]:
                    return total, False  # another worker is pruning
            cursor.execute(sql, params)
            deleted = cursor.rowcount
        total += deleted
        if deleted:
            logger.info("pruned batch jobs=%s total=%s", deleted, total, extra={"action": "prune"})
        if deleted < batch_size:
            return total, False
        if max_seconds is not None and time.monotonic() - started >= max_seconds:
            return total, True


def prune_after_seconds() -> float | None:
    """Return HOTMESH_PRUNE_AFTER_SECONDS, or None when automatic pruning is off.

    Raise ValueError for a value that is not a positive number.
    """
    value = getattr(django_settings, "HOTMESH_PRUNE_AFTER_SECONDS", None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(
            f"HOTMESH_PRUNE_AFTER_SECONDS must be a positive number of seconds or None, "
            f"not {value!r}."
        )
    return float(value)


def auto_prune() -> int:
    """Prune per HOTMESH_PRUNE_AFTER_SECONDS; return how many jobs went. Call from
    every worker's heartbeat.

    Off (returns 0) when the setting is None. Runs at most once a minute per
    process once it has caught up, and as whichever worker wins an advisory lock;
    each call stops after about one heartbeat's worth of batches, so the heartbeat
    that calls it is not held up past the lease. A backlog is worked off on the
    following beats. Database errors are logged, not raised.
    """
    global _auto_next
    with _auto_lock:
        now = time.monotonic()
        if now < _auto_next:
            return 0
        # Claimed before running, so a failing prune is retried only once a minute.
        _auto_next = now + AUTO_PRUNE_INTERVAL_SECONDS
    try:
        after = prune_after_seconds()
    except ValueError as exc:
        logger.error("automatic pruning off error=%s", exc, extra={"action": "prune"})
        return 0
    if after is None:
        return 0
    budget = max(settings.heartbeat_seconds, 0.1)
    try:
        deleted, more = _prune(
            datetime.timedelta(seconds=after),
            list(DEFAULT_STATUSES),
            1000,
            max_seconds=budget,
            lock=True,
        )
    except (DatabaseError, RuntimeError) as exc:
        logger.error("automatic pruning failed error=%s", exc, extra={"action": "prune"})
        return 0
    if more:
        # Out of time with a full last batch: come back on the next beat.
        with _auto_lock:
            _auto_next = 0.0
    return deleted


def reset_process_state() -> None:
    """Let the next auto_prune() run at once (for tests)."""
    global _auto_next
    with _auto_lock:
        _auto_next = 0.0
