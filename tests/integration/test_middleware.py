"""HOTMESH_MIDDLEWARE with a real worker: context propagation, order, short-circuits,
errors, and the path with no middleware."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.db import transaction
from django.test import override_settings

import hotmesh_django as hm
from hotmesh_django import middleware
from hotmesh_django.engine.replay_check import replay_job
from hotmesh_django.models import Activity, Job, Journal, Stream
from tests.conftest import InProcessWorker, wait_until
from tests.integration import middleware_defs as d
from tests.models import Counter

pytestmark = pytest.mark.django_db(transaction=True)

DEFS = "tests.integration.middleware_defs"


def _mw(*names: str) -> override_settings:
    return override_settings(HOTMESH_MIDDLEWARE=[f"{DEFS}.{name}" for name in names])


@pytest.fixture
def as_tenant() -> Iterator[Callable[[str], None]]:
    """Set the caller's tenant (as a web request would) for the rest of the test."""
    tokens = []

    def set_tenant(name: str) -> None:
        tokens.append(d.tenant.set(name))

    yield set_tenant
    for token in reversed(tokens):
        d.tenant.reset(token)


def _acme(seen: dict[str, Any]) -> bool:
    return seen == {"tenant": "acme", "headers": {"tenant": "acme"}}


@_mw("TenantMiddleware")
def test_the_callers_tenant_reaches_every_step(
    worker: InProcessWorker, as_tenant: Callable[[str], None]
) -> None:
    as_tenant("acme")
    handle = d.tenant_flow.start()
    result = handle.result(timeout=30)
    assert _acme(result["workflow"])
    assert _acme(result["step"])
    assert _acme(result["timed"]), "an activity with a timeout runs on a helper thread"
    assert _acme(result["child"]["workflow"])
    assert _acme(result["child"]["step"])
    # A job started from inside an activity carries the tenant on too.
    assert _acme(hm.get_handle(result["spawned"]).result(timeout=30))
    # Stored inside the call payloads, beside args and kwargs.
    job = Job.objects.get(workflow_id=handle.id)
    assert job.input == {"args": [], "kwargs": {}, "headers": {"tenant": "acme"}}
    assert all(
        step.input["headers"] == {"tenant": "acme"}
        for step in Activity.objects.filter(kind__in=["ACTIVITY", "CHILD"])
    )


@_mw("TenantMiddleware")
def test_a_caller_without_a_tenant_stores_no_headers(worker: InProcessWorker) -> None:
    handle = d.whoami.start()
    assert handle.result(timeout=30) == {"tenant": None, "headers": {}}
    assert Job.objects.get(workflow_id=handle.id).input == {"args": [], "kwargs": {}}


def test_headers_travel_where_no_middleware_is_configured(
    start_worker: Callable[..., InProcessWorker], as_tenant: Callable[[str], None]
) -> None:
    """A worker deployed without the middleware still hands the stored headers on,
    through hm.headers(), steps, and continue_as_new runs."""
    as_tenant("acme")
    with _mw("TenantMiddleware"):
        handle = d.tenant_loop.start(2)
    start_worker()
    result = handle.result(timeout=30)
    assert result == {
        "workflow": {"tenant": None, "headers": {"tenant": "acme"}},
        "step": {"tenant": None, "headers": {"tenant": "acme"}},
    }
    assert Job.objects.filter(search__previous_run__isnull=False).count() == 2


@_mw("OuterMiddleware", "InnerMiddleware")
def test_middleware_runs_outermost_first(worker: InProcessWorker) -> None:
    d.EVENTS.clear()
    handle = d.whoami.start()
    assert handle.result(timeout=30)["headers"] == {"trail": ["outer", "inner"]}
    assert d.EVENTS == [
        "outer start >",
        "inner start >",
        "inner start <",
        "outer start <",
        "outer activity >",
        "inner activity >",
        "inner activity <",
        "outer activity <",
    ]
    d.EVENTS.clear()
    d.tenant_child.start().result(timeout=30)
    turns = [e for e in d.EVENTS if "workflow" in e]
    assert len(turns) >= 8  # one turn to schedule the step, one to return
    nested = ["outer workflow >", "inner workflow >", "inner workflow <", "outer workflow <"]
    assert turns == nested * (len(turns) // 4)


@_mw("StartOnlyMiddleware")
def test_only_overridden_hooks_join_the_chain(worker: InProcessWorker) -> None:
    chain = middleware.loaded()
    assert len(chain.start) == 1
    assert chain.execute_activity == chain.execute_workflow == ()
    result = d.tenant_child.start().result(timeout=30)
    assert result["step"]["headers"] == {"trace": "t-1"}


@_mw("CannedMiddleware")
def test_middleware_can_answer_a_step_itself(worker: InProcessWorker) -> None:
    handle = d.retrying.start("canned")
    assert handle.result(timeout=30) == f"canned for {handle.id}"
    assert not Counter.objects.filter(key="canned").exists()  # the activity never ran


@_mw("CannedMiddleware")
def test_middleware_can_answer_a_start_itself(worker: InProcessWorker) -> None:
    d.CannedMiddleware.closed = True
    try:
        handle = d.whoami.start()
    finally:
        d.CannedMiddleware.closed = False
    assert not Job.objects.exists()
    with pytest.raises(hm.JobNotFound):
        handle.status()


@_mw("TenantMiddleware", "RefuseMiddleware")
def test_a_refused_start_raises_to_the_caller_and_enqueues_nothing(
    as_tenant: Callable[[str], None],
) -> None:
    as_tenant("mallory")
    with transaction.atomic():
        with pytest.raises(PermissionDenied, match="mallory"):
            d.whoami.start()
        # The caller's transaction is still usable: the start had its own savepoint.
        Counter.objects.create(key="after")
    assert Counter.objects.filter(key="after").exists()
    assert not Job.objects.exists()
    assert not Stream.objects.exists()


@_mw("RaiseAfterStartMiddleware")
def test_an_error_after_call_next_rolls_the_start_back() -> None:
    with pytest.raises(RuntimeError, match="audit log"):
        d.whoami.start()
    assert not Job.objects.exists()
    assert not Stream.objects.exists()


@_mw("FlakyMiddleware")
def test_a_middleware_error_fails_the_attempt_and_is_retried(worker: InProcessWorker) -> None:
    handle = d.retrying.start("flaky")
    assert handle.result(timeout=30) == "ran"
    assert Counter.objects.get(key="flaky").value == 1  # attempt 1 never reached it
    retried = Journal.objects.get(job__workflow_id=handle.id, event="step_retried")
    assert retried.data["error"]["type"] == "ConnectionError"
    assert "mw.count_call attempt 1" in retried.data["error"]["message"]


@_mw("FlakyMiddleware")
def test_a_middleware_error_in_a_turn_fails_the_workflow(worker: InProcessWorker) -> None:
    handle = d.retrying.start("doomed", fail=True)
    with pytest.raises(hm.WorkflowFailed) as failed:
        handle.result(timeout=30)
    assert failed.value.type == "LookupError"
    assert handle.id in failed.value.message
    assert not Counter.objects.filter(key="doomed").exists()


def test_no_middleware_calls_the_activity_directly(worker: InProcessWorker) -> None:
    assert middleware.loaded() == middleware.Chain()
    handle = d.whoami.start()
    assert handle.result(timeout=30) == {"tenant": None, "headers": {}}
    assert Job.objects.get(workflow_id=handle.id).input == {"args": [], "kwargs": {}}
    frames = d.stack.start().result(timeout=30)
    assert any(f.endswith("engine/execute.py") for f in frames)
    assert not any(f.endswith("hotmesh_django/middleware.py") for f in frames)


def test_the_chain_is_cached_and_rebuilt_when_the_setting_changes() -> None:
    assert middleware.loaded() is middleware.loaded()
    assert middleware.loaded().start == ()
    with _mw("OuterMiddleware", "InnerMiddleware"):
        chain = middleware.loaded()
        assert chain is middleware.loaded()
        assert [hook.__self__.label for hook in chain.start] == ["outer", "inner"]
    assert middleware.loaded().start == ()


@_mw("NotMiddleware")
def test_a_bad_entry_fails_the_start_clearly() -> None:
    with pytest.raises(ImproperlyConfigured, match="does not subclass"):
        d.whoami.start()
    assert not Job.objects.exists()


@_mw("TenantMiddleware")
def test_replay_check_runs_workflows_through_the_middleware(
    worker: InProcessWorker, as_tenant: Callable[[str], None]
) -> None:
    as_tenant("acme")
    handle = d.tenant_branch.start()
    wait_until(lambda: handle.status() == hm.JobStatus.WAITING and Activity.objects.count() == 2)
    assert Activity.objects.get(seq=1).name == "mw.whoami"
    as_tenant("someone-else")  # the checker's own context must not matter
    result = replay_job(Job.objects.get(workflow_id=handle.id))
    assert result.ok, result.detail


@pytest.mark.skipif(not d.HAS_TASKS, reason="django.tasks needs Django 6+")
@_mw("TenantMiddleware")
def test_django_tasks_carry_the_tenant(
    worker: InProcessWorker, as_tenant: Callable[[str], None], settings: Any
) -> None:
    settings.TASKS = {"default": {"BACKEND": "hotmesh_django.tasks.HotMeshBackend"}}
    as_tenant("acme")
    result = d.seen_task.enqueue()
    hm.get_handle(result.id).result(timeout=30)
    result.refresh()
    assert _acme(result.return_value)
