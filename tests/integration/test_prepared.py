"""The engine's statement plumbing: text parameters, and ids the server makes."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from psycopg.adapt import PyFormat, Transformer

from hotmesh_django.engine import prepared
from hotmesh_django.models import Job
from tests import activities as a

pytestmark = pytest.mark.django_db(transaction=True)


def test_text_cursors_send_str_as_text_and_share_one_adapters_map() -> None:
    connection.ensure_connection()
    conn = connection.connection
    first, second = prepared.text_cursor(conn), prepared.text_cursor(conn)
    assert first.adapters is second.adapters is prepared.TextContext(conn).adapters
    # The connection's own map (the ORM's) still sends str as "unknown".
    assert conn.adapters is not first.adapters
    assert conn.adapters.get_dumper(str, PyFormat.AUTO).oid == 0
    tx = Transformer(prepared.TextContext(conn))
    tx.dump_sequence(["x"], [PyFormat.AUTO])
    assert tx.types == (25,)  # text
    # A parameter used as a varchar column and as text gets one type.
    first.execute("SELECT pg_typeof(%s), %s::varchar || 'b'", ["a", "a"])
    assert first.fetchone() == ("text", "ab")


def test_a_start_without_workflow_id_gets_a_fresh_uuid_from_the_server() -> None:
    handles = [a.add.start(1, 2) for _ in range(3)]
    ids = [h.id for h in handles]
    assert len(set(ids)) == 3
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)
    assert sorted(Job.objects.values_list("workflow_id", flat=True)) == sorted(ids)
    # Given, it is kept, and a second start with it returns the same job.
    given = a.add.using(workflow_id="mine").start(1, 2)
    assert given.id == "mine" == a.add.using(workflow_id="mine").start(5, 5).id
    assert Job.objects.count() == 4
