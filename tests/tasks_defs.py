"""Django 6 `@task` functions run by HotMeshBackend in tests/integration/test_tasks_backend.py.

Import only on Django 6+: `django.tasks` does not exist before.
"""

from __future__ import annotations

from typing import Any

from django.tasks import task

from tests.activities import bump


class Boom(Exception):
    """A task's own exception class, to check the class path a failure records."""


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@task
def record(key: str) -> int:
    """Count a run of `key`; the Counter row ids give the order tasks ran in."""
    return bump(key)


@task
def explode(message: str) -> None:
    bump(f"explode:{message}")
    raise Boom(message)


@task
def divide(a: int, b: int) -> float:
    return a / b


@task
def bad_return() -> object:
    return object()


@task
async def async_add(a: int, b: int) -> int:
    return a + b


def with_context(context: Any) -> int:
    """Not a task: made one with takes_context=True, HotMeshBackend must refuse it.

    Decorating it here would fail this module's import under HotMeshBackend.
    """
    return int(context.attempt)
