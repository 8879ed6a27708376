"""hotmesh_django: PostgreSQL as a durable workflow engine for Django.

import hotmesh_django as hm

@hm.activity(retry=hm.RetryPolicy(max_attempts=5))
def charge(order_id: int) -> str: ...

@hm.workflow(queue="orders")
def checkout(order_id: int) -> dict: ...

handle = checkout.start(42)
handle.result(timeout=10)
"""

from __future__ import annotations

from hotmesh_django.choices import HumanTaskStatus, JobStatus
from hotmesh_django.context import (
    continue_as_new,
    gather,
    now,
    patched,
    random,
    set_search,
    set_state,
    sleep,
    uuid4,
    wait_for_human,
    wait_for_signal,
)
from hotmesh_django.definitions import (
    ActivityDefinition,
    RetryPolicy,
    WorkflowDefinition,
    activity,
    workflow,
)
from hotmesh_django.exceptions import (
    ActivityFailed,
    CodecError,
    HotmeshError,
    HumanTaskError,
    HumanTaskTimeout,
    JobCancelled,
    JobFinishedError,
    JobNotFound,
    NonDeterminismError,
    NonRetryableError,
    PayloadTooLarge,
    SignalTimeout,
    UnknownDefinition,
    WorkflowFailed,
)
from hotmesh_django.handles import JobHandle, StepHandle, get_handle, signal
from hotmesh_django.human_tasks import claim_task, release_task, resolve_task
from hotmesh_django.middleware import headers

__all__ = [
    "ActivityDefinition",
    "ActivityFailed",
    "CodecError",
    "HotmeshError",
    "HumanTaskError",
    "HumanTaskStatus",
    "HumanTaskTimeout",
    "JobCancelled",
    "JobFinishedError",
    "JobHandle",
    "JobNotFound",
    "JobStatus",
    "NonDeterminismError",
    "NonRetryableError",
    "PayloadTooLarge",
    "RetryPolicy",
    "SignalTimeout",
    "StepHandle",
    "UnknownDefinition",
    "WorkflowDefinition",
    "WorkflowFailed",
    "activity",
    "claim_task",
    "continue_as_new",
    "gather",
    "get_handle",
    "headers",
    "now",
    "patched",
    "random",
    "release_task",
    "resolve_task",
    "set_search",
    "set_state",
    "signal",
    "sleep",
    "uuid4",
    "wait_for_human",
    "wait_for_signal",
    "workflow",
]
