"""Name → definition maps for the activities and workflows this process knows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured

from hotmesh_django.exceptions import UnknownDefinition

if TYPE_CHECKING:
    from hotmesh_django.definitions import ActivityDefinition, WorkflowDefinition

_activities: dict[str, ActivityDefinition[Any, Any]] = {}
_workflows: dict[str, WorkflowDefinition[Any, Any]] = {}


def _register(table: dict[str, Any], definition: Any, what: str) -> None:
    existing = table.get(definition.name)
    if existing is not None:
        same = (existing.func.__module__, existing.func.__qualname__) == (
            definition.func.__module__,
            definition.func.__qualname__,
        )
        if not same:
            raise ImproperlyConfigured(
                f"Two {what} definitions are named {definition.name!r}: "
                f"{existing.func.__module__}.{existing.func.__qualname__} and "
                f"{definition.func.__module__}.{definition.func.__qualname__}. "
                "Pass name= to tell them apart."
            )
    table[definition.name] = definition


def register_activity(definition: ActivityDefinition[Any, Any]) -> None:
    _register(_activities, definition, "activity")


def register_workflow(definition: WorkflowDefinition[Any, Any]) -> None:
    _register(_workflows, definition, "workflow")


def get_activity(name: str) -> ActivityDefinition[Any, Any]:
    try:
        return _activities[name]
    except KeyError:
        raise UnknownDefinition(
            f"Unknown activity {name!r}: no module this worker imported defines it. "
            "Add its module to HOTMESH_IMPORTS or pass --import."
        ) from None


def get_workflow(name: str) -> WorkflowDefinition[Any, Any]:
    try:
        return _workflows[name]
    except KeyError:
        raise UnknownDefinition(
            f"Unknown workflow {name!r}: no module this worker imported defines it. "
            "Add its module to HOTMESH_IMPORTS or pass --import."
        ) from None


def has_activity(name: str) -> bool:
    return name in _activities


def has_workflow(name: str) -> bool:
    return name in _workflows


def activities() -> dict[str, ActivityDefinition[Any, Any]]:
    return dict(_activities)


def workflows() -> dict[str, WorkflowDefinition[Any, Any]]:
    return dict(_workflows)


def queues() -> set[str]:
    """Return every queue a registered definition uses."""
    return {d.queue for d in _activities.values()} | {d.queue for d in _workflows.values()}
