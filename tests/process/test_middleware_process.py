"""HOTMESH_MIDDLEWARE across processes: the caller here, the worker a subprocess."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import override_settings

import hotmesh_django as hm
from tests.conftest import WorkerProcess
from tests.integration import middleware_defs as d

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]

Spawn = Callable[..., WorkerProcess]
TENANT = "tests.integration.middleware_defs.TenantMiddleware"


def test_the_tenant_crosses_into_a_worker_process(spawn_worker: Spawn) -> None:
    token = d.tenant.set("globex")
    try:
        with override_settings(HOTMESH_MIDDLEWARE=[TENANT]):
            handle = d.tenant_flow.start()
    finally:
        d.tenant.reset(token)
    spawn_worker(
        "--import", "tests.integration.middleware_defs", env_extra={"HOTMESH_MIDDLEWARE": TENANT}
    )
    globex = {"tenant": "globex", "headers": {"tenant": "globex"}}
    result = handle.result(timeout=60)
    assert result["workflow"] == result["step"] == result["timed"] == globex
    assert result["child"] == {"workflow": globex, "step": globex}
    assert hm.get_handle(result["spawned"]).result(timeout=60) == globex


def test_a_worker_with_bad_middleware_refuses_to_start(spawn_worker: Spawn) -> None:
    proc = spawn_worker(
        "--burst", env_extra={"HOTMESH_MIDDLEWARE": "tests.integration.middleware_defs.Nope"}
    )
    assert proc.wait(timeout=60) != 0
    assert "hotmesh.E031" in proc.log()
