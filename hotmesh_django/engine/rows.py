"""Write a turn's new rows in one statement.

A workflow turn typically adds a step, its message and two journal entries, and
marks an earlier step done. Through the ORM that is four statements, each compiled
in Python and parsed and planned by the server. Here each table's rows travel as one
JSON document, unpacked server-side with `jsonb_to_recordset`, and every insert and
update is a data-modifying CTE of a single statement: one round trip per turn.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from collections.abc import Sequence
from functools import cache
from typing import Any

from django.db import connection, models
from django.db.models.expressions import DatabaseDefault
from django.db.models.functions import Now
from psycopg.types.json import Jsonb

from hotmesh_django import faults
from hotmesh_django.choices import HELD
from hotmesh_django.engine import prepared
from hotmesh_django.engine.notify import WORK_CHANNEL
from hotmesh_django.models import Activity, Job, Journal, SealedJSONField, Stream
from hotmesh_django.serialization import Unreadable, seal


@cache
def _columns(model: type[models.Model]) -> list[models.Field[Any, Any]]:
    """The model's concrete columns except the serial primary key."""
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    for field in fields:
        default = getattr(field, "db_default", models.NOT_PROVIDED)
        if default is not models.NOT_PROVIDED and not isinstance(default, Now):
            raise TypeError(f"{model.__name__}.{field.name}: only Now() db_defaults are supported")
    return fields


def _column(field: models.Field[Any, Any]) -> str:
    return connection.ops.quote_name(str(field.column))


def _record_type(model: type[models.Model]) -> str:
    """The `AS x(col type, ...)` list jsonb_to_recordset unpacks into."""
    return ", ".join(f"{_column(f)} {f.db_type(connection)}" for f in _columns(model))


def _select_list(model: type[models.Model]) -> str:
    parts = []
    for field in _columns(model):
        column = f"x.{_column(field)}"
        if getattr(field, "db_default", models.NOT_PROVIDED) is not models.NOT_PROVIDED:
            column = f"COALESCE({column}, statement_timestamp())"
        parts.append(column)
    return ", ".join(parts)


def _value(field: models.Field[Any, Any], value: Any) -> Any:
    """The JSON form of one column value, as jsonb_to_recordset reads it back."""
    if value is None or isinstance(value, DatabaseDefault | Now):
        return None  # NULL, or the column's db_default
    if isinstance(field, SealedJSONField):
        # Through HOTMESH_CODEC, as the field's get_db_prep_save does for the ORM.
        return value.stored if isinstance(value, Unreadable) else seal(value)
    if isinstance(field, models.JSONField):
        return value
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _field(model: type[models.Model], name: str) -> models.Field[Any, Any]:
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field)
    return field


def _document(model: type[models.Model], objs: Sequence[models.Model]) -> Jsonb:
    fields = _columns(model)
    return Jsonb([{f.column: _value(f, getattr(obj, f.attname)) for f in fields} for obj in objs])


@cache
def _insert(name: str, model: type[models.Model], returning: str = "", where: str = "") -> str:
    """The `name AS (INSERT ...)` CTE for `model` (built once per shape: it depends
    on nothing but the model and the guard)."""
    table = connection.ops.quote_name(model._meta.db_table)
    columns = ", ".join(_column(f) for f in _columns(model))
    return (
        # Identifiers come from the models' _meta, values are bound parameters.
        f"{name} AS (INSERT INTO {table} ({columns}) SELECT {_select_list(model)}"  # noqa: S608
        f" FROM jsonb_to_recordset(%({name})s) AS x({_record_type(model)})"
        f"{' WHERE ' + where if where else ''}{returning})"
    )


_CHANGED = (
    "changed AS (UPDATE {table} AS a SET status = x.status, output = x.output,"
    " error = x.error, finished_at = x.finished_at"
    " FROM jsonb_to_recordset(%(changed)s)"
    " AS x(seq integer, status text, output jsonb, error jsonb, finished_at timestamptz)"
    " WHERE a.job_id = %(job)s AND a.seq = x.seq{guard})"
)


@cache
def _on_table(template: str, model: type[models.Model], guard: str = "") -> str:
    """`template` with {table} filled in for `model` and {guard} appended to its
    WHERE clause (built once per combination)."""
    table = connection.ops.quote_name(model._meta.db_table)
    return template.format(table=table, guard=f" AND {guard}" if guard else "")


@dataclasses.dataclass(frozen=True, kw_only=True)
class StatusMove:
    """A suspending job's own row change, written with the turn's rows."""

    status: str
    sources: tuple[str, ...]  # guarded like JobQuerySet.transition
    start: bool  # stamp started_at (the first turn)
    clear_error: bool  # a parked job whose code came back


# Both return the job row's new version (see turn.STALE), which a worker keeps with
# the step it runs next so that step's ack can tell nothing else touched the job.
_MOVE = (
    "job_row AS (UPDATE {table} SET status = %(move_status)s, updated_at = statement_timestamp(),"
    " started_at = CASE WHEN %(move_start)s THEN coalesce(started_at, statement_timestamp())"
    " ELSE started_at END,"
    " error = CASE WHEN %(move_clear)s THEN NULL ELSE error END"
    " WHERE id = %(job)s AND status = ANY(%(move_sources)s){guard} RETURNING xmin::text)"
)

_TOUCH = (
    "job_row AS (UPDATE {table} SET updated_at = statement_timestamp() WHERE id = %(job)s{guard}"
    " RETURNING xmin::text)"
)

# A step's success ack folded into the turn it leads to (engine/sticky.py): lock the
# job only if its row is still the version the worker replayed from, then drop the
# step's message, guarded like every ack. Everything else the statement writes is
# conditional on `acked`, so a stale version or a lost lease writes nothing at all.
_ACK_GUARD = """versioned AS MATERIALIZED (
    SELECT id FROM {job} WHERE id = %(job)s AND xmin::text = %(ack_version)s
       FOR NO KEY UPDATE SKIP LOCKED
), acked AS (
    DELETE FROM {stream}
     WHERE id = %(ack_id)s AND worker = %(ack_worker)s AND attempts = %(ack_attempts)s
       AND {held}
       AND EXISTS (SELECT 1 FROM versioned)
 RETURNING id
)"""

# Appended to every write that must happen only when the guard held.
GUARD = "EXISTS (SELECT 1 FROM acked)"


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepAck:
    """The guard of a step's success ack written together with the next turn."""

    message_id: int
    worker_id: uuid.UUID
    attempts: int  # the attempt whose outcome this is (the guard names it too)
    version: str  # the job row's xmin the replay assumed


@dataclasses.dataclass(frozen=True, kw_only=True)
class Written:
    """What write_turn wrote."""

    mine: int | None  # the id of the message written RUNNING for this worker
    version: str | None  # the job row's version after the write (None: not moved)
    acked: bool  # with a StepAck: the guard held and everything was written


def write_turn(
    job_id: int,
    *,
    move: StatusMove | None = None,
    new_steps: Sequence[Activity],
    changed_steps: Sequence[Activity],
    messages: Sequence[Stream],
    journal: Sequence[Journal],
    notify: Sequence[str] = (),
    ack: StepAck | None = None,
) -> Written:
    """Insert the new steps, messages and journal rows, update the changed steps of
    job `job_id` and make its status `move`, in one statement, then send the `notify`
    payloads on the work channel.

    With `ack`, the same statement first drops the acked step's message, and writes
    nothing unless the job's row is still at `ack.version` and the lease held (see
    Written.acked); the caller puts the acked step in `changed_steps`.
    """
    ctes: list[str] = []
    params: dict[str, Any] = {"job": job_id, "channel": WORK_CHANNEL, "notify": list(notify)}
    guard = ""
    if ack is not None:
        guard = GUARD
        ctes.append(ack_guard())
        params.update(
            ack_version=ack.version,
            ack_id=ack.message_id,
            ack_worker=ack.worker_id,
            ack_attempts=ack.attempts,
        )
    if new_steps:
        ctes.append(_insert("steps", Activity, where=guard))
        params["steps"] = _document(Activity, new_steps)
    if changed_steps:
        ctes.append(_on_table(_CHANGED, Activity, guard))
        params["changed"] = Jsonb(
            [
                {
                    "seq": s.seq,
                    "status": s.status,
                    "output": _value(_field(Activity, "output"), s.output),
                    "error": _value(_field(Activity, "error"), s.error),
                    "finished_at": _value(_field(Activity, "finished_at"), s.finished_at),
                }
                for s in changed_steps
            ]
        )
    job_row = move is not None or bool(ctes)
    if move is None and ctes:
        # A new row version of the job tells a turn that locked it meanwhile that
        # its snapshot of the steps is stale (see turn.STALE).
        ctes.append(_on_table(_TOUCH, Job, guard))
    elif move is not None:
        ctes.append(_on_table(_MOVE, Job, guard))
        params.update(
            move_status=move.status,
            move_sources=list(move.sources),
            move_start=move.start,
            move_clear=move.clear_error,
        )
    if journal:
        ctes.append(_insert("entries", Journal, where=guard))
        params["entries"] = _document(Journal, journal)
    mine = "NULL::bigint"
    if messages:
        ctes.append(_insert("messages", Stream, " RETURNING id, status", guard))
        params["messages"] = _document(Stream, messages)
        mine = "(SELECT id FROM messages WHERE status = 'RUNNING' LIMIT 1)"
    if not ctes and not notify:
        return Written(mine=None, version=None, acked=False)
    moved = "(SELECT xmin FROM job_row)" if job_row else "NULL"
    # NOTIFY is transactional: listeners hear it only once these rows are visible.
    # Under an ack guard it is sent only when the guard held.
    notify_where = f" WHERE {guard}" if guard else ""
    final = (
        f"SELECT {mine}, {moved}, {'(SELECT count(*) FROM acked)' if guard else '0'},"  # noqa: S608
        " (SELECT count(pg_notify(%(channel)s, p))"
        f" FROM unnest(%(notify)s::text[]) AS p{notify_where})"
    )
    with_clause = f"WITH {', '.join(ctes)} " if ctes else ""
    with prepared.cursor() as cursor:
        faults.point("turn_write")
        cursor.execute(with_clause + final, params)
        row = cursor.fetchone()
    if row is None:
        return Written(mine=None, version=None, acked=False)
    return Written(
        mine=None if row[0] is None else int(row[0]),
        version=row[1],
        acked=bool(row[2]),
    )


@cache
def ack_guard() -> str:
    """The `versioned` and `acked` CTEs of a guarded write (params ack_version,
    ack_id, ack_worker, ack_attempts)."""
    quote = connection.ops.quote_name
    return _ACK_GUARD.format(
        job=quote(Job._meta.db_table), stream=quote(Stream._meta.db_table), held=HELD
    )
