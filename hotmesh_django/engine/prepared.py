"""Cursors whose statements PostgreSQL plans once per session.

Django binds parameters on the client by default, so the server parses and plans
every statement anew. The engine's hot statements are large data-modifying CTEs that
take longer to plan than to run (EXPLAIN: a claim plans in 0.8 ms and runs in 0.6),
so they go through a server-binding cursor instead: psycopg prepares a statement
once it has run twice on a connection and the server reuses its plan from then on.

Prepared statements belong to a server session, which a pooler in transaction mode
does not keep: with HOTMESH_LISTEN off or in a `--poll-only` worker these are plain
Django cursors. Either way each one is a Django cursor wrapper, so database errors, query
logging and execute wrappers behave as for any other cursor.
"""

from __future__ import annotations

import weakref
from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections
from psycopg.adapt import AdaptersMap
from psycopg.types.string import StrDumper

from hotmesh_django.conf import settings

# Executions of one statement on a connection before it is prepared: a turn's write
# takes many shapes, and one seen once need not take a slot in the session's cache.
PREPARE_THRESHOLD = 2

_disabled = False


def disable() -> None:
    """Use client-side binding for the rest of this process (a poll-only worker)."""
    global _disabled
    _disabled = True


def enabled() -> bool:
    return not _disabled and settings.listen


def cursor(using: str = DEFAULT_DB_ALIAS) -> Any:
    """A cursor for one of the engine's hot statements on connection `using`."""
    wrapper = connections[using]
    if not enabled():
        return wrapper.cursor()
    wrapper.close_if_health_check_failed()
    wrapper.ensure_connection()
    with wrapper.wrap_database_errors:
        if wrapper.connection.prepare_threshold is None:
            # Django turns preparing off; it only matters to server-binding cursors,
            # so the ORM's own (client-binding) statements are unaffected.
            wrapper.connection.prepare_threshold = PREPARE_THRESHOLD
        return wrapper._prepare_cursor(text_cursor(wrapper.connection))  # type: ignore[attr-defined]


def text_cursor(conn: psycopg.Connection[Any]) -> psycopg.Cursor[Any]:
    """A psycopg cursor on `conn` that sends str parameters as text."""
    return _TextCursor(conn)


class _TextCursor(psycopg.Cursor[Any]):
    # The connection's adapters with str sent as text, shared by every such cursor
    # on the connection instead of registered on each one.
    @property
    def adapters(self) -> AdaptersMap:
        return text_adapters(self.connection)


class TextContext:
    """What a psycopg Transformer needs to dump parameters as a text cursor would,
    without making a cursor (psycopg's AdaptContext)."""

    __slots__ = ("adapters", "connection")

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.connection = conn
        self.adapters = text_adapters(conn)


# Registering a dumper copies the connection's dumper tables; done on every cursor,
# that was ~40 us of an idle start() (and a cursor made only for its adapters, ~100
# us of an idle worker's claim). The map is made from the connection's adapters
# once Django has set them up (its loaders for jsonb, timestamptz).
_text_adapters: weakref.WeakKeyDictionary[psycopg.Connection[Any], AdaptersMap] = (
    weakref.WeakKeyDictionary()
)


def text_adapters(conn: psycopg.Connection[Any]) -> AdaptersMap:
    """`conn`'s adapters, with str parameters sent as text (made once per connection)."""
    adapters = _text_adapters.get(conn)
    if adapters is None:
        adapters = AdaptersMap(conn.adapters)
        # Text, not "unknown": a parameter used twice (a varchar column and a text
        # expression) must not get two inferred types.
        adapters.register_dumper(str, StrDumper)
        _text_adapters[conn] = adapters
    return adapters
