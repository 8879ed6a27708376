"""Exceptions raised by hotmesh_django.

Failures derive from `HotmeshError`. Control flow inside a workflow (suspending for a
step, a timer or a signal) derives from `BaseException`, so a user's broad
`except Exception:` cannot swallow it and corrupt a replay.
"""

from __future__ import annotations


class HotmeshError(Exception):
    """Base class of every error hotmesh_django raises on purpose."""


class NonRetryableError(HotmeshError):
    """Raise inside an activity to fail it at once, whatever its retry policy."""


class JobNotFound(HotmeshError, LookupError):
    """No job has the given workflow_id."""


class JobFinishedError(HotmeshError):
    """The job has already finished, so it cannot take this action."""


class NotAWorkflow(HotmeshError, ValueError):
    """The job runs a single activity, so it cannot take what only a workflow can
    (a signal)."""


class StepRunning(HotmeshError):
    """A step is running, so the job cannot be re-run from it yet."""


class PayloadTooLarge(HotmeshError, ValueError):
    """A serialized value is larger than HOTMESH_MAX_PAYLOAD_BYTES."""


class CodecError(HotmeshError):
    """A stored value could not be encoded or decoded by HOTMESH_CODEC.

    Usually a key problem: the value was sealed with a key that is not (or no longer)
    in HOTMESH_CODEC_KEYS, or sealed while a codec was on and read with it off.
    """


class UnknownDefinition(HotmeshError, LookupError):
    """No activity or workflow is registered under this name in this process."""


class RemoteError(HotmeshError):
    """An error recorded by a worker, carried back with its type and message."""

    def __init__(
        self, message: str, *, error_type: str = "", error_message: str = "", traceback: str = ""
    ) -> None:
        super().__init__(message)
        self.type = error_type
        self.message = error_message
        self.traceback = traceback


class ActivityFailed(RemoteError):
    """A workflow step failed for good (its retries are exhausted).

    Raised inside the workflow at the call site, so the workflow may catch it and
    compensate.
    """


class WorkflowFailed(RemoteError):
    """Raised by `JobHandle.result()` when the job failed or was cancelled."""


class JobCancelled(WorkflowFailed):
    """Raised by `JobHandle.result()` when the job was cancelled."""


class SignalTimeout(HotmeshError, TimeoutError):
    """Raised inside a workflow when `wait_for_signal` times out."""


class HumanTaskTimeout(SignalTimeout):
    """Raised inside a workflow when `wait_for_human` times out; the task is EXPIRED."""


class HumanTaskError(HotmeshError):
    """A claim, release or resolve of a human task was refused.

    `code` says why, for callers that branch on it: "not_found", "not_allowed" (the
    user is not in the task's role), "not_claimant" (someone else holds the claim,
    or nobody does), "claimed", "resolved", "expired", "cancelled" or "bad_answer".
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class NonDeterminismError(HotmeshError):
    """A replay called a different step than the journal recorded at that position."""


class Suspend(BaseException):  # noqa: N818 - control flow, not an error
    """Stop the current workflow turn: it waits for a step, a timer or a signal."""


class ContinueAsNew(BaseException):  # noqa: N818 - control flow, not an error
    """End this run and start a fresh one of the same workflow_id (hm.continue_as_new)."""

    def __init__(self, data: object) -> None:
        super().__init__("continue as new")
        self.data = data
