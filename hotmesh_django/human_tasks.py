"""Acting on human tasks from outside a workflow: claim, release, resolve.

The workflow side is `hm.wait_for_human` (context.py); the engine side, which these
call, is `engine.human`. Kept apart from both so `import hotmesh_django` does not
import the models before Django's app registry is ready.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hotmesh_django.models import HumanTask


def claim_task(task_id: int, user: Any) -> HumanTask:
    """Claim task `task_id` for `user`, a member of its role group (or a superuser).

    Return the task. Claiming a task the user already holds changes nothing. Raise
    HumanTaskError when the task does not exist, the user is not in its role, someone
    else holds it, or it is resolved, expired or cancelled.
    """
    from hotmesh_django.engine.human import claim_task as claim

    return claim(task_id, user)


def release_task(task_id: int, user: Any) -> HumanTask:
    """Give back a task `user` claimed, OPEN for anyone in its role; return it.

    A superuser may release anyone's claim. Raise HumanTaskError otherwise.
    """
    from hotmesh_django.engine.human import release_task as release

    return release(task_id, user)


def resolve_task(task_id: int, answer: Any, user: Any) -> HumanTask:
    """Answer task `task_id`, which `user` must have claimed; return it.

    In one transaction the task becomes RESOLVED and its workflow resumes with
    `answer` as the value of `hm.wait_for_human`. Raise HumanTaskError when the user
    does not hold the claim or the task is already resolved, expired or cancelled,
    and TypeError when `answer` is not JSON.
    """
    from hotmesh_django.engine.human import resolve_task as resolve

    return resolve(task_id, answer, user)
