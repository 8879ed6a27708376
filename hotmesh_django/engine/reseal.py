"""Rewrite every stored value through the current HOTMESH_CODEC.

After turning a codec on, values written before stay plain (they are still read);
after putting a new key first in HOTMESH_CODEC_KEYS, values sealed with the old key
need it to be read. `reseal` rewrites them all with the current codec and first key,
so the old key can be dropped (or, with `plain=True`, writes them back unsealed before
the codec is turned off).

Each write is a compare-and-set on the value that was read: a row the engine changed
in between already holds a freshly sealed value and is left alone, so this is safe
to run while workers run.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

from django.apps import apps
from django.db import connection, transaction
from psycopg.types.json import Jsonb

from hotmesh_django.exceptions import CodecError
from hotmesh_django.models import SealedJSONField
from hotmesh_django.serialization import seal, unseal


@dataclasses.dataclass(kw_only=True)
class ResealCount:
    """What happened to one column."""

    column: str
    rewritten: int = 0
    # Changed by the engine between the read and the write (and so sealed already).
    moved: int = 0
    unreadable: int = 0
    first_error: str = ""


def sealed_columns() -> Iterator[tuple[str, str]]:
    """Yield (table, column) for every sealed field of the app's models."""
    for model in apps.get_app_config("hotmesh_django").get_models():
        for field in model._meta.concrete_fields:
            if isinstance(field, SealedJSONField):
                yield model._meta.db_table, str(field.column)


def reseal(
    *,
    plain: bool = False,
    batch_size: int = 500,
    dry_run: bool = False,
    progress: Callable[[ResealCount], None] | None = None,
) -> list[ResealCount]:
    """Rewrite every sealed column's values with the current codec; return the counts."""
    counts = []
    for table, column in sealed_columns():
        count = ResealCount(column=f"{table}.{column}")
        _reseal_column(table, column, count, plain=plain, batch_size=batch_size, dry_run=dry_run)
        counts.append(count)
        if progress is not None:
            progress(count)
    return counts


def _reseal_column(
    table: str, column: str, count: ResealCount, *, plain: bool, batch_size: int, dry_run: bool
) -> None:
    quote = connection.ops.quote_name
    t, c = quote(table), quote(column)
    # Identifiers come from the models, quoted; every value is a parameter.
    select = f"SELECT id, {c} FROM {t} WHERE id > %s AND {c} IS NOT NULL ORDER BY id LIMIT %s"  # noqa: S608
    update = f"UPDATE {t} SET {c} = %s WHERE id = %s AND {c} = %s"  # noqa: S608
    last = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(select, [last, batch_size])
            rows = cursor.fetchall()
            for row_id, text in rows:
                # Django's psycopg backend loads jsonb as text for JSONField to parse.
                stored = json.loads(text) if isinstance(text, str | bytes) else text
                try:
                    opened = unseal(stored)
                except CodecError as exc:
                    count.unreadable += 1
                    count.first_error = count.first_error or str(exc)
                    continue
                if dry_run:
                    count.rewritten += 1
                    continue
                fresh = opened if plain else seal(opened)
                params: list[Any] = [Jsonb(fresh), row_id, Jsonb(stored)]
                cursor.execute(update, params)
                if cursor.rowcount:
                    count.rewritten += 1
                else:
                    count.moved += 1
        if len(rows) < batch_size:
            return
        last = rows[-1][0]


def describe(count: ResealCount, *, dry_run: bool) -> str:
    """One line for the command's output."""
    verb = "would be rewritten" if dry_run else "rewritten"
    text = f"{count.column}: {count.rewritten} {verb}"
    if count.moved:
        text += f", {count.moved} changed meanwhile (already current)"
    if count.unreadable:
        text += f", {count.unreadable} unreadable ({count.first_error})"
    return text
