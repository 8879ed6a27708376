"""A statement whose rows arrive before its commit has finished.

A claim is one statement in an implicit transaction, and much of what it costs an
idle worker is the commit: the server flushes the WAL to disk before it answers.
Here the statement goes out in pipeline mode as Bind/Execute, Flush, Sync, all in
one write. The Flush makes the server send the rows as soon as the statement has
run; the Sync then commits. So the claiming thread hands the messages to the runner
threads while the WAL flush is still under way, and waking a runner (a thread
switch, slow on a virtual machine) overlaps the flush instead of following it.
A runner still starts a message only once its claim has committed (`Commit.wait`):
user code runs after the claim's commit, its attempt already counted; a claim that
did not commit runs nothing and writes nothing (its message is still READY).

Only for a connection this thread owns, with no transaction open, on a direct
session (prepared statements: a pooler in transaction mode keeps neither them nor a
pipeline's implicit transaction; see prepared.enabled()).
"""

from __future__ import annotations

import hashlib
import re
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from functools import cache, lru_cache
from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.transaction import TransactionManagementError
from psycopg import errors, pq
from psycopg.adapt import PyFormat, Transformer
from psycopg.generators import fetch, send

from hotmesh_django.engine import prepared

_PARAM = re.compile(r"%\((\w+)\)s")

# The statements prepared on each session (by name). A new session (Django
# reconnected) is a new key; a name the server forgot (DEALLOCATE ALL, which psycopg
# sends after a DROP or a ROLLBACK on the session) is prepared again.
_prepared: weakref.WeakKeyDictionary[psycopg.Connection[Any], set[bytes]] = (
    weakref.WeakKeyDictionary()
)


class Commit:
    """The outcome of a claim's commit, which runner threads wait for."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._committed = False

    def wait(self) -> bool:
        """Block until the commit has finished; True if it committed."""
        self._done.wait()
        return self._committed

    def settle(self, committed: bool) -> None:
        self._committed = committed
        self._done.set()


COMMITTED = Commit()
COMMITTED.settle(True)


@cache
def positional(sql: str) -> tuple[bytes, tuple[str, ...]]:
    """`sql` with %(name)s placeholders as $1, $2, ... and the names in that order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _PARAM.sub(number, sql).replace("%%", "%").encode(), tuple(names)


@contextmanager
def rows_then_commit(
    sql: str, params: Mapping[str, Any], using: str = DEFAULT_DB_ALIAS
) -> Iterator[tuple[list[tuple[Any, ...]], Commit]]:
    """Run `sql` on its own, yield (its rows, its Commit) before the commit ends, and
    wait for the commit on exit (raising Django's error if it failed).

    The connection is this thread's and stays locked until the exit: hand the rows
    out inside the block, and do no other database work there.
    """
    wrapper = connections[using]
    if wrapper.in_atomic_block or not wrapper.get_autocommit():
        raise TransactionManagementError("rows_then_commit() needs no open transaction")
    wrapper.close_if_health_check_failed()
    wrapper.ensure_connection()
    conn: psycopg.Connection[Any] = wrapper.connection
    with conn.lock:
        with wrapper.wrap_database_errors:
            rows = _send(conn, sql, params)
        commit = Commit()
        committed = False
        try:
            yield rows, commit
        finally:
            try:
                with wrapper.wrap_database_errors:
                    _await_sync(conn)
                committed = True
            finally:
                commit.settle(committed)


def _send(conn: psycopg.Connection[Any], sql: str, params: Mapping[str, Any]) -> list[Any]:
    """Send the statement, Flush and Sync; return its rows (the Sync still pending).

    Retried once if the server forgot the prepared statement: nothing ran then.
    """
    try:
        return _send_once(conn, sql, params)
    except errors.InvalidSqlStatementName:
        _prepared.pop(conn, None)
        return _send_once(conn, sql, params)


def _send_once(conn: psycopg.Connection[Any], sql: str, params: Mapping[str, Any]) -> list[Any]:
    pgconn = conn.pgconn
    query, names = positional(sql)
    tx = Transformer(prepared.TextContext(conn))
    values = tx.dump_sequence([params[n] for n in names], [PyFormat.AUTO] * len(names))
    types, formats = tx.types, tx.formats
    name = _statement_name(query, tuple(types or ()))
    known = _prepared.setdefault(conn, set())
    pgconn.enter_pipeline_mode()
    try:
        preparing = name not in known
        if preparing:
            pgconn.send_prepare(name, query, param_types=types)
        pgconn.send_query_prepared(name, values, param_formats=formats)
        pgconn.send_flush_request()
        pgconn.pipeline_sync()
        conn.wait(send(pgconn))
        if preparing:
            _check(conn, conn.wait(fetch(pgconn)))
            _end_of_command(conn)
            known.add(name)
        result = conn.wait(fetch(pgconn))
        _check(conn, result)
        _end_of_command(conn)
    except BaseException:
        _drain(conn)
        raise
    tx.set_pgresult(result)
    return tx.load_rows(0, result.ntuples, tuple)


@lru_cache(maxsize=256)
def _statement_name(query: bytes, types: tuple[int, ...]) -> bytes:
    # Value-dependent types (psycopg dumps 1 as int2, 40000 as int4) are part of the
    # statement, as they are of psycopg's own prepared statements. Cached: hashing
    # the query's few kilobytes is measurable on an idle worker's pickup.
    return b"hm_" + hashlib.sha1(query + repr(types).encode()).hexdigest()[:20].encode()  # noqa: S324


def _check(conn: psycopg.Connection[Any], result: pq.abc.PGresult | None) -> None:
    if result is None:
        raise errors.InternalError("no result from the statement")
    if result.status == pq.ExecStatus.FATAL_ERROR:
        raise errors.error_from_result(result, encoding=conn.info.encoding)
    if result.status == pq.ExecStatus.PIPELINE_ABORTED:
        raise errors.InternalError("pipeline aborted")


def _end_of_command(conn: psycopg.Connection[Any]) -> None:
    # In pipeline mode each command's results end with a NULL.
    if conn.wait(fetch(conn.pgconn)) is not None:
        raise errors.InternalError("more than one result from the statement")


def _await_sync(conn: psycopg.Connection[Any]) -> None:
    """Read up to the Sync's answer (the commit has finished) and leave pipeline
    mode; raise the server's error if the commit failed."""
    pgconn = conn.pgconn
    failure: psycopg.Error | None = None
    try:
        while True:
            result = conn.wait(fetch(pgconn))
            if result is None:
                continue
            if result.status == pq.ExecStatus.PIPELINE_SYNC:
                break
            if result.status == pq.ExecStatus.FATAL_ERROR and failure is None:
                # A commit that failed (a deferred constraint, say) answers the Sync
                # with an error before the end of the pipeline.
                failure = errors.error_from_result(result, encoding=conn.info.encoding)
    finally:
        _leave(pgconn)
    if failure is not None:
        raise failure


def _drain(conn: psycopg.Connection[Any]) -> None:
    """After an error: read up to the Sync so the session is usable again."""
    pgconn = conn.pgconn
    try:
        while pgconn.status == pq.ConnStatus.OK:
            result = conn.wait(fetch(pgconn))
            if result is not None and result.status == pq.ExecStatus.PIPELINE_SYNC:
                break
    except psycopg.Error:
        pass  # the session is gone; Django closes it on its next use
    finally:
        _leave(pgconn)


def _leave(pgconn: pq.abc.PGconn) -> None:
    if pgconn.pipeline_status != pq.PipelineStatus.OFF and pgconn.status == pq.ConnStatus.OK:
        with suppress(psycopg.Error):
            pgconn.exit_pipeline_mode()


def statement_names(conn: psycopg.Connection[Any]) -> Sequence[bytes]:
    """The statements this module prepared on `conn` (for tests)."""
    return sorted(_prepared.get(conn, ()))
