"""Cron schedules: start a workflow once per cron slot, with no leader process.

Every worker's heartbeat calls `tick()`. Whichever worker wins a transaction-scoped
advisory lock starts the due schedules in one short transaction and moves each
schedule's `next_run_at` past now, so:

- a slot fires exactly once however many workers tick: the lock serialises the
  tickers, the row lock (FOR UPDATE SKIP LOCKED) fences off admin edits, and the
  job's workflow_id `schedule:<name>:<slot>` makes a repeated start a no-op;
- after downtime, the oldest missed slot runs once and the rest are skipped, as
  the next slot is computed from now, not from the slot that fired;
- no worker waits on another: a loser of the lock returns at once.

Slots are computed with croniter in the schedule's IANA timezone (so "0 9 * * *"
in Europe/Paris follows daylight saving time) and stored in UTC. When clocks go
back, croniter yields a wall-clock time inside the repeated hour twice, and the
schedule fires at both instants.
"""

from __future__ import annotations

import datetime
import hashlib
import threading
import uuid
import zoneinfo
from collections.abc import Iterable
from typing import Any

from croniter import CroniterError, croniter
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone as dj_timezone

from hotmesh_django import registry
from hotmesh_django.exceptions import UnknownDefinition
from hotmesh_django.handles import JobHandle
from hotmesh_django.models import Schedule
from hotmesh_django.redaction import get_logger
from hotmesh_django.serialization import from_json

logger = get_logger(__name__)

# Differs from the rescue lock (claim.RESCUE_LOCK_KEY) and the prune lock, so a
# worker busy rescuing does not keep schedules from firing.
SCHEDULE_LOCK_KEY = 0x686F746D_736368  # "hotm" "sch"

# Most schedules one tick starts; the rest fire on the next heartbeat. Keeps the
# transaction, and so the row locks, short.
TICK_LIMIT = 100

_MAX_WORKFLOW_ID = 255
_ALIASES = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)

# Per process: declared schedules are upserted on the first tick this process wins.
_synced = False
# Per process: problems already logged, so a broken row does not log every beat.
_reported: set[tuple[str, ...]] = set()
_state_lock = threading.Lock()


def validate_schedule(cron: object, timezone: object) -> zoneinfo.ZoneInfo:
    """Check a cron expression and an IANA timezone name; return the timezone.

    Accept five fields (minute hour day-of-month month day-of-week) or an alias
    such as "@daily". Raise ValueError with a message fit for a form or a
    decorator; the admin form and the system check call this too.
    """
    validate_cron(cron)
    return validate_timezone(timezone)


def validate_cron(cron: object) -> None:
    """Raise ValueError unless `cron` is a cron expression this scheduler can honour."""
    if not isinstance(cron, str) or not cron.strip():
        raise ValueError(
            f"The cron expression must be a non-empty string such as '*/5 * * * *', not {cron!r}."
        )
    expression = cron.strip()
    fields = expression.split()
    if expression.startswith("@"):
        if expression.lower() not in _ALIASES:
            raise ValueError(
                f"Invalid cron expression {cron!r}: unknown alias; use one of "
                f"{', '.join(sorted(_ALIASES))}."
            )
    elif len(fields) != 5:
        # croniter also takes a sixth (seconds) and a seventh (year) field; a
        # heartbeat-driven scheduler cannot honour seconds, so refuse them.
        raise ValueError(
            f"Invalid cron expression {cron!r}: it needs 5 fields (minute hour "
            f"day-of-month month day-of-week), not {len(fields)}."
        )
    try:
        croniter(expression)
    except (CroniterError, ValueError, KeyError) as exc:
        raise ValueError(f"Invalid cron expression {cron!r}: {exc}.") from None


def validate_timezone(timezone: object) -> zoneinfo.ZoneInfo:
    """Return the IANA timezone `timezone` names, or raise ValueError saying why not."""
    hint = "use an IANA name such as 'UTC' or 'Europe/Paris'"
    if not isinstance(timezone, str) or not timezone:
        raise ValueError(f"The timezone must be a non-empty string ({hint}), not {timezone!r}.")
    try:
        return zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        # ValueError: a name that is not a valid key at all, such as "../x".
        raise ValueError(f"Unknown timezone {timezone!r}: {hint}.") from None


def next_run_after(cron: str, timezone: str, after: datetime.datetime) -> datetime.datetime:
    """Return the first slot of `cron` in `timezone` strictly after `after`, in UTC.

    Raise ValueError if the expression or the timezone is invalid.
    """
    zone = validate_schedule(cron, timezone)
    if dj_timezone.is_naive(after):
        raise ValueError("after must be an aware datetime.")
    following = croniter(cron.strip(), after.astimezone(zone)).get_next(datetime.datetime)
    return following.astimezone(datetime.UTC)  # type: ignore[no-any-return]


def schedule_workflow_id(name: str, suffix: str) -> str:
    """Return `schedule:<name>:<suffix>`, shortening a long name to fit 255 characters.

    Deterministic, so a repeated start of a slot finds the job the first one made.
    """
    workflow_id = f"schedule:{name}:{suffix}"
    if len(workflow_id) <= _MAX_WORKFLOW_ID:
        return workflow_id
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    room = _MAX_WORKFLOW_ID - len(f"schedule:~{digest}:{suffix}")
    return f"schedule:{name[: max(room, 0)]}~{digest}:{suffix}"[:_MAX_WORKFLOW_ID]


def _report_once(key: tuple[str, ...], message: str, *args: Any) -> None:
    with _state_lock:
        if key in _reported:
            return
        _reported.add(key)
    logger.error(message, *args, extra={"action": "schedule"})


def _now(using: str) -> datetime.datetime:
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT now()")
        return cursor.fetchone()[0]  # type: ignore[no-any-return]


def sync_declared(*, now: datetime.datetime | None = None, using: str = DEFAULT_DB_ALIAS) -> int:
    """Upsert a Schedule row for every registered workflow declared with `schedule=`,
    and delete the declared rows of registered workflows that no longer declare one.

    The row is named after the workflow. An existing row keeps its enabled flag and
    arguments; its cron, timezone and workflow follow the code, and its next run is
    recomputed when they change. Rows of workflows this process does not know are
    left alone (other processes may import other modules), and so are rows made in
    the admin. Return how many rows were written or deleted.
    """
    now = now or _now(using)
    definitions = registry.workflows().values()
    undeclared = [d.name for d in definitions if d.schedule is None]
    written, _ = Schedule.objects.using(using).filter(name__in=undeclared, declared=True).delete()
    if written:
        logger.info("declared schedules removed count=%s", written, extra={"action": "schedule"})
    for definition in definitions:
        if definition.schedule is None:
            continue
        cron, tz, name = definition.schedule, definition.timezone, definition.name
        with transaction.atomic(using=using):
            row = Schedule.objects.using(using).select_for_update().filter(name=name).first()
            if row is None:
                _, created = Schedule.objects.using(using).get_or_create(
                    name=name,
                    defaults={
                        "workflow": name,
                        "cron": cron,
                        "timezone": tz,
                        "declared": True,
                        "next_run_at": next_run_after(cron, tz, now),
                    },
                )
                written += created
                continue
            moved = (row.cron, row.timezone, row.workflow) != (cron, tz, name)
            if moved or row.next_run_at is None or not row.declared:
                next_run = row.next_run_at
                if moved or next_run is None:
                    next_run = next_run_after(cron, tz, now)
                Schedule.objects.using(using).filter(pk=row.pk).update(
                    cron=cron, timezone=tz, workflow=name, declared=True, next_run_at=next_run
                )
                written += 1
    if written:
        logger.info("declared schedules synced count=%s", written, extra={"action": "schedule"})
    return written


def tick(now: datetime.datetime | None = None, *, using: str = DEFAULT_DB_ALIAS) -> int:
    """Start the workflows of due schedules, as whichever caller wins the lock.

    Call from every worker's heartbeat; a caller that loses the lock returns 0 at
    once. Return how many slots fired. A schedule whose workflow this process does
    not know, or whose cron is invalid, is logged and left due for another worker
    (or a fix). `now` defaults to the database clock.
    """
    global _synced
    started = 0
    with transaction.atomic(using=using):
        with connections[using].cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s), now()", [SCHEDULE_LOCK_KEY])
            won, db_now = cursor.fetchone()
        if not won:
            return 0
        now = now or db_now
        synced_here = False
        if not _synced:
            sync_declared(now=now, using=using)
            synced_here = True
        rows = Schedule.objects.using(using).filter(enabled=True)
        unset = rows.filter(next_run_at__isnull=True).select_for_update(skip_locked=True)
        for row in unset[:TICK_LIMIT]:
            # Made in the admin or by hand without a next run: start counting now.
            following = _following(row, now)
            if following is not None:
                Schedule.objects.using(using).filter(pk=row.pk).update(next_run_at=following)
        due = (
            rows.filter(next_run_at__lte=now)
            .order_by("next_run_at", "id")
            .select_for_update(skip_locked=True)[:TICK_LIMIT]
        )
        for row in due:
            started += _fire(row, now, using=using)
    if synced_here:
        _synced = True
    return started


def _following(row: Schedule, now: datetime.datetime) -> datetime.datetime | None:
    """Return the first slot of `row` after now, or None (logged) if the row is invalid."""
    try:
        return next_run_after(row.cron, row.timezone, now)
    except ValueError as exc:
        _report_once(
            (row.name, "invalid", row.cron, row.timezone),
            "schedule invalid name=%s error=%s",
            row.name,
            exc,
        )
        return None


def _fire(row: Schedule, now: datetime.datetime, *, using: str) -> int:
    slot = row.next_run_at
    assert slot is not None  # noqa: S101 - the query selected next_run_at <= now
    try:
        definition = registry.get_workflow(row.workflow)
    except UnknownDefinition as exc:
        # Another worker may import the module that defines it: leave the slot due.
        _report_once(
            (row.name, "unknown", row.workflow),
            "schedule skipped name=%s workflow=%s error=%s",
            row.name,
            row.workflow,
            exc,
        )
        return 0
    following = _following(row, now)
    if following is None:
        return 0
    workflow_id = schedule_workflow_id(row.name, slot.astimezone(datetime.UTC).isoformat())
    try:
        args, kwargs = _arguments(row)
        # A savepoint: a failed start rolls back alone and leaves the slot due.
        with transaction.atomic(using=using):
            definition.using(workflow_id=workflow_id).start(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - one bad schedule must not stop the others
        _report_once(
            (row.name, "start", workflow_id),
            "schedule start failed name=%s workflow_id=%s error=%r",
            row.name,
            workflow_id,
            exc,
        )
        return 0
    # The next slot after now, not after `slot`: missed slots collapse into this one.
    Schedule.objects.using(using).filter(pk=row.pk).update(last_run_at=slot, next_run_at=following)
    logger.info(
        "schedule fired name=%s workflow_id=%s", row.name, workflow_id, extra={"action": "schedule"}
    )
    return 1


def _arguments(row: Schedule) -> tuple[list[Any], dict[str, Any]]:
    args = from_json(row.args) if row.args is not None else []
    kwargs = from_json(row.kwargs) if row.kwargs is not None else {}
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise TypeError("a schedule's args must be a JSON list and its kwargs a JSON object.")
    return args, kwargs


def trigger_now(name: str, *, using: str = DEFAULT_DB_ALIAS) -> JobHandle:
    """Start the schedule's workflow now, outside its slots (the admin's "trigger now").

    Works on a disabled schedule too, and leaves its next run alone. Raise
    Schedule.DoesNotExist for an unknown name and UnknownDefinition when no module
    this process imported defines the workflow.
    """
    row = Schedule.objects.using(using).filter(name=name).first()
    if row is None:
        raise Schedule.DoesNotExist(f"No schedule is named {name!r}.")
    definition = registry.get_workflow(row.workflow)
    args, kwargs = _arguments(row)
    workflow_id = schedule_workflow_id(name, f"manual:{uuid.uuid4()}")
    with transaction.atomic(using=using):
        handle = definition.using(workflow_id=workflow_id).start(*args, **kwargs)
        Schedule.objects.using(using).filter(pk=row.pk).update(last_run_at=_now(using))
    logger.info(
        "schedule triggered name=%s workflow_id=%s", name, workflow_id, extra={"action": "schedule"}
    )
    assert isinstance(handle, JobHandle)  # noqa: S101 - outside a workflow, start() makes a job
    return handle


def set_enabled(names: Iterable[str], enabled: bool, *, using: str = DEFAULT_DB_ALIAS) -> int:
    """Enable or disable schedules; return how many changed.

    Enabling counts from now: slots missed while disabled do not fire. Rows already
    in the requested state are left alone.
    """
    names = list(names)
    if not enabled:
        return (
            Schedule.objects.using(using).filter(name__in=names, enabled=True).update(enabled=False)
        )
    changed = 0
    with transaction.atomic(using=using):
        now = _now(using)
        rows = (
            Schedule.objects.using(using).select_for_update().filter(name__in=names, enabled=False)
        )
        for row in rows:
            try:
                following: datetime.datetime | None = next_run_after(row.cron, row.timezone, now)
            except ValueError:
                following = None  # tick() reports it; enabling must still work
            changed += (
                Schedule.objects.using(using)
                .filter(pk=row.pk, enabled=False)
                .update(enabled=True, next_run_at=following)
            )
    return changed


def reset_process_state() -> None:
    """Forget this process's sync and reported problems (for tests)."""
    global _synced
    with _state_lock:
        _synced = False
        _reported.clear()
