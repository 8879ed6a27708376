from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

import hotmesh_django as hm
from hotmesh_django import registry
from tests import activities, workflows


def test_plain_call_outside_a_workflow_runs_the_function() -> None:
    assert activities.add(2, 3) == 5


def test_names_default_to_module_and_qualname() -> None:
    def f() -> None: ...

    f.__qualname__ = "module_level"
    f.__module__ = "tests.unit.test_definitions"
    definition = hm.activity(f)
    assert definition.name == "tests.unit.test_definitions.module_level"
    assert registry.get_activity(definition.name) is definition


def test_nested_functions_are_refused() -> None:
    with pytest.raises(TypeError, match="module-level"):

        @hm.activity
        def inner() -> None: ...


def test_duplicate_names_are_refused() -> None:
    def other() -> int:
        return 1

    other.__qualname__ = "somewhere_else"
    with pytest.raises(ImproperlyConfigured, match="Two activity definitions are named 't.add'"):
        hm.activity(name="t.add")(other)


@pytest.mark.parametrize(
    "kwargs",
    [{"queue": ""}, {"queue": "q" * 101}, {"timeout": -1}, {"timeout": 0}, {"name": ""}],
)
def test_bad_decorator_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        hm.activity(**kwargs)  # type: ignore[call-overload]


def test_using_returns_a_copy_and_validates() -> None:
    copy = activities.add.using(queue="other", priority=5, delay=datetime.timedelta(seconds=2))
    assert copy.options.queue == "other"
    assert copy.options.delay == 2.0
    assert activities.add.options.queue is None
    with pytest.raises(TypeError, match="unknown option"):
        activities.add.using(colour="red")
    # NaN and infinity once reached Postgres as "interval out of range", aborting the
    # caller's transaction; a timedelta past what a start can wait is refused too.
    for bad in (-1, float("nan"), float("inf"), 1e300, datetime.timedelta(days=40_000)):
        with pytest.raises(ValueError, match="delay must be from 0 to"):
            activities.add.using(delay=bad)
    with pytest.raises(TypeError, match="delay must be a number of seconds"):
        activities.add.using(delay="soon")
    with pytest.raises(ValueError, match="workflow_id"):
        activities.add.using(workflow_id="x" * 256)
    for blank in ("   ", "orders ", "\torders"):
        with pytest.raises(ValueError, match="whitespace"):
            activities.add.using(queue=blank)


def test_workflow_only_calls_refuse_outside_a_workflow() -> None:
    with pytest.raises(hm.HotmeshError, match="inside a running workflow"):
        hm.sleep(1)
    with pytest.raises(hm.HotmeshError, match="inside a running workflow"):
        hm.wait_for_signal("x")


def test_deterministic_helpers_work_outside_a_workflow() -> None:
    assert isinstance(hm.now(), datetime.datetime)
    assert 0 <= hm.random() < 1
    assert hm.uuid4() != hm.uuid4()
    assert workflows.child.name == "t.child"


def test_definitions_keep_the_function_name_and_doc() -> None:
    assert activities.slow.__name__ == "slow"
    assert "SIGKILL" in (activities.slow.__doc__ or "")


def test_the_name_may_come_first_as_design_lists_it() -> None:
    def f() -> None: ...

    f.__qualname__ = "named_first"
    f.__module__ = "tests.unit.test_definitions"
    assert hm.activity("t.named_first", queue="q1")(f).name == "t.named_first"
    f.__qualname__ = "named_first_wf"
    assert hm.workflow("t.named_first_wf")(f).name == "t.named_first_wf"
    with pytest.raises(TypeError, match="name twice"):
        hm.activity("a", name="b")


def test_retry_policy_takes_its_fields_in_design_order() -> None:
    policy = hm.RetryPolicy(5, 0.5, 3.0, 10.0, (KeyError,))
    assert policy == hm.RetryPolicy(
        max_attempts=5,
        initial_interval=0.5,
        backoff=3.0,
        max_interval=10.0,
        non_retryable=(KeyError,),
    )


def test_carried_draws_are_for_one_job_and_forgotten_before_each_message() -> None:
    from types import SimpleNamespace

    from hotmesh_django.engine import turn

    ctx: Any = SimpleNamespace(job=SimpleNamespace(id=7), drawn=lambda: {1: ("now", "x")})
    turn.carry_draws(ctx)
    assert turn.take_draws(8) == {}  # another job's: dropped
    assert turn.take_draws(7) == {}
    turn.carry_draws(ctx)
    assert turn.take_draws(7) == {1: ("now", "x")}
    turn.carry_draws(ctx)
    turn.forget_draws()
    assert turn.take_draws(7) == {}
