"""Start a job: one statement that writes the job, its first step and its message."""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from django.db import DEFAULT_DB_ALIAS, transaction

from hotmesh_django import middleware, signals
from hotmesh_django.definitions import (
    ActivityDefinition,
    WorkflowDefinition,
    positional_names,
    signature_of,
)
from hotmesh_django.engine import prepared
from hotmesh_django.engine.notify import WORK_CHANNEL, tables
from hotmesh_django.handles import JobHandle
from hotmesh_django.serialization import encode_call, encode_call_text, search_text

# Every CTE runs whether or not the final SELECT reads it (they modify data), and all
# of them see the same snapshot: when ON CONFLICT skips the job, `j` is empty and so
# is everything built from it. One round trip, and it joins the caller's transaction.
# Without a workflow_id the server makes one (a UUID, as uuid.uuid4() would), which
# cannot conflict.
_START = """
WITH j AS (
    INSERT INTO {job} (workflow_id, name, kind, queue, status, priority, input, search,
                       state, concurrency_key, deadline_at, created_at, updated_at)
    VALUES (coalesce(%(wid)s, gen_random_uuid()::text), %(name)s, %(kind)s, %(queue)s,
            'READY', %(priority)s, %(input)s::jsonb, %(search)s::jsonb, '{{}}'::jsonb, %(ckey)s,
            now() + make_interval(secs => %(delay)s::float8 + %(timeout)s::float8),
            now(), now())
    ON CONFLICT (workflow_id) DO NOTHING
    RETURNING id, workflow_id
), a AS (
    INSERT INTO {activity} (job_id, seq, kind, name, queue, status, attempts, input,
                            created_at)
    SELECT id, 1, 'ACTIVITY', %(name)s, %(queue)s, 'READY', 0, %(input)s::jsonb, now()
      FROM j WHERE %(kind)s = 'ACTIVITY'
), s AS (
    INSERT INTO {stream} (queue, kind, job_id, step, name, payload, priority, status,
                          visible_at, attempts, created_at, concurrency_key)
    SELECT %(queue)s, %(skind)s, id, %(step)s::int, %(name)s,
           CASE WHEN %(skind)s = 'TASK' THEN %(input)s::jsonb END,
           %(priority)s::int, %(sstatus)s,
           now() + make_interval(secs => %(delay)s::float8), 0, now(), %(ckey)s::varchar
      FROM j
    UNION ALL
    -- The workflow's own timeout: a timer turn that fails the job if it still runs.
    SELECT %(queue)s, 'TIMER', id, NULL::int, %(name)s, NULL::jsonb, %(priority)s::int,
           'SCHEDULED',
           now() + make_interval(secs => %(delay)s::float8 + %(timeout)s::float8), 0, now(),
           NULL
      FROM j WHERE %(timeout)s::float8 IS NOT NULL
    RETURNING id, status, visible_at
), r AS (
    INSERT INTO {journal} (job_id, event, name, data, created_at)
    SELECT id, 'created', %(name)s, NULL, now() FROM j
), n AS (
    SELECT pg_notify(%(channel)s, CASE status WHEN 'READY' THEN 'q:' || %(queue)s
                     ELSE 't:' || extract(epoch FROM visible_at)::text END)
      FROM s
)
SELECT (SELECT id FROM j), (SELECT count(*) FROM n), (SELECT workflow_id FROM j)
"""


@functools.cache
def _start_sql() -> str:
    return _START.format(**tables())


def _dumps_search(search: Mapping[str, Any] | None) -> str:
    if not search:
        return "{}"
    return search_text(search)


def start_job(
    definition: ActivityDefinition[Any, Any] | WorkflowDefinition[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    using: str = DEFAULT_DB_ALIAS,
) -> JobHandle:
    """Create a job for `definition` and return its handle.

    Idempotent on workflow_id: if a job with that id exists, in any state, return a
    handle to it and write nothing. Raise TypeError, before anything is written, when
    the arguments do not fit the function or one of them is not JSON. With
    HOTMESH_MIDDLEWARE, the start passes through each middleware's start() hook
    first; what one raises reaches the caller and nothing is written.
    """
    # The caller's arguments, before any middleware: what they wrote must fit.
    check_arguments(definition, args, kwargs)
    hooks = middleware.loaded().start
    # Started from inside an activity (or a workflow turn): carry its headers on.
    inherited = middleware.headers()
    if hooks:
        return _start_through(hooks, definition, args, kwargs, inherited, using)
    return _start(definition, args, kwargs, inherited, using)


def check_arguments(
    definition: ActivityDefinition[Any, Any] | WorkflowDefinition[Any, Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> None:
    """Raise TypeError when `args` and `kwargs` cannot be passed to the function:
    at start(), not attempts later in a worker, after the retries it would cost."""
    signature = signature_of(definition.func)
    if signature is None:
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        # An argument that is not JSON is named first, whatever else is wrong.
        encode_call(args, kwargs, names=positional_names(definition.func))
        raise TypeError(
            f"{definition.name}.start() arguments do not fit {definition.func.__name__}"
            f"{_parameters(signature)}: {exc}."
        ) from None


def _parameters(signature: inspect.Signature) -> str:
    """`(a, b=1, *rest)`: the parameters without their annotations, for a message."""
    bare = [p.replace(annotation=p.empty) for p in signature.parameters.values()]
    return str(signature.replace(parameters=bare, return_annotation=signature.empty))


def _start_through(
    hooks: tuple[Callable[..., Any], ...],
    definition: ActivityDefinition[Any, Any] | WorkflowDefinition[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    inherited: Mapping[str, Any],
    using: str,
) -> JobHandle:
    # The workflow_id is chosen before the chain, so middleware sees the final one.
    workflow_id = definition.options.workflow_id or str(uuid.uuid4())
    definition = definition.using(workflow_id=workflow_id)
    call = middleware.StartCall(
        definition=definition,
        name=definition.name,
        kind="activity" if isinstance(definition, ActivityDefinition) else "workflow",
        workflow_id=workflow_id,
        queue=definition.options.queue or definition.queue,
        args=tuple(args),
        kwargs=dict(kwargs),
        headers=dict(inherited),
    )

    def insert(final: middleware.StartCall) -> JobHandle:
        return _start(definition, final.args, dict(final.kwargs), final.headers, using)

    # A savepoint, so a middleware that raises after call_next leaves no job behind.
    with transaction.atomic(using=using):
        return middleware.run(hooks, call, insert)


def _start(
    definition: ActivityDefinition[Any, Any] | WorkflowDefinition[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    headers: Mapping[str, Any],
    using: str,
) -> JobHandle:
    options = definition.options
    delay = options.delay_seconds()
    # One text, sealed once, for the job's input and its message's payload.
    call = encode_call_text(args, kwargs, headers, names=positional_names(definition.func))
    search = _dumps_search(options.search)
    is_activity = isinstance(definition, ActivityDefinition)
    workflow_id = options.workflow_id or None
    queue = options.queue or definition.queue
    priority = definition.priority if options.priority is None else options.priority
    timeout = None if is_activity else definition.timeout
    params: dict[str, Any] = {
        "wid": workflow_id,
        "name": definition.name,
        "kind": "ACTIVITY" if is_activity else "WORKFLOW",
        "queue": queue,
        "priority": priority,
        "input": call,
        "search": search,
        "delay": delay,
        "timeout": timeout,
        # A delayed workflow starts with a timer: at most one TURN may be READY per
        # job, and a promoted TURN could collide with one queued by a signal.
        "skind": "TASK" if is_activity else ("TIMER" if delay > 0 else "TURN"),
        "step": 1 if is_activity else None,
        "sstatus": "SCHEDULED" if delay > 0 else "READY",
        "channel": WORK_CHANNEL,
        "ckey": options.concurrency_key,
    }
    with prepared.cursor(using) as cursor:
        cursor.execute(_start_sql(), params)
        created = cursor.fetchone()
    if created and created[0] is not None:
        transaction.on_commit(
            functools.partial(
                signals.started,
                job_id=created[0],
                workflow_id=created[2],
                name=definition.name,
                queue=queue,
            ),
            using=using,
        )
        return JobHandle(created[2], using=using)
    # Nothing created: the workflow_id given exists (an idempotent start); one the
    # server made cannot.
    return JobHandle(str(workflow_id), using=using)
