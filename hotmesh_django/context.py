"""The running workflow's context, and the calls only a workflow may make.

A workflow turn re-runs the workflow function from the top with a `WorkflowContext`
active on the thread. Every durable call takes the next step number; a finished step
returns (or raises) its recorded outcome, a pending one suspends the turn, and a new
one is recorded here and written by the engine when the turn ends, in the same
transaction that acknowledges the turn.
"""

from __future__ import annotations

import datetime
import random as _random
import threading
import uuid as _uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

from django.utils import timezone

from hotmesh_django.durations import to_seconds
from hotmesh_django.exceptions import (
    ActivityFailed,
    CodecError,
    HotmeshError,
    HumanTaskTimeout,
    NonDeterminismError,
    SignalTimeout,
    Suspend,
)

if TYPE_CHECKING:
    from hotmesh_django.definitions import ActivityDefinition, WorkflowDefinition
    from hotmesh_django.handles import JobHandle, StepHandle
    from hotmesh_django.models import Activity, Job, Signal

_local = threading.local()


def current() -> WorkflowContext | None:
    """Return the context of the workflow running on this thread, if any."""
    return getattr(_local, "ctx", None)


@contextmanager
def activate(ctx: WorkflowContext) -> Iterator[WorkflowContext]:
    previous = current()
    _local.ctx = ctx
    try:
        yield ctx
    finally:
        _local.ctx = previous


def _require(what: str) -> WorkflowContext:
    ctx = current()
    if ctx is None:
        raise HotmeshError(f"hm.{what}() can only be called inside a running workflow.")
    return ctx


# The recorded values a replay may draw again in place of new ones: pure draws. A
# signal's marker step is not one (its recording sends the signal).
DRAWN = frozenset({"now", "uuid4", "random"})


class WorkflowContext:
    """State of one workflow turn: the recorded steps and the new ones."""

    def __init__(
        self,
        *,
        job: Job,
        steps: dict[int, Activity],
        signals: Callable[[], list[Signal]],
        db_now: datetime.datetime,
        headers: Mapping[str, Any] | None = None,
        draws: Mapping[int, tuple[str, Any]] | None = None,
    ) -> None:
        self.job = job
        # Values an earlier replay of this turn drew but did not write, by step: drawn
        # again here (engine/turn.carry_draws).
        self._draws: Mapping[int, tuple[str, Any]] = draws or {}
        # The job's middleware headers: its new steps and children inherit them.
        self.headers: Mapping[str, Any] = headers or {}
        self.steps = steps
        self._load_signals = signals
        self._signals: list[Signal] | None = None
        self.db_now = db_now
        self.seq = 0
        # Written by the engine when the turn ends.
        self.new_steps: list[Activity] = []
        self.changed_steps: list[Activity] = []
        self.new_activity_calls: list[tuple[Activity, ActivityDefinition[Any, Any]]] = []
        self.new_children: list[tuple[Activity, WorkflowDefinition[Any, Any], Any]] = []
        self.new_timers: list[Activity] = []
        self.consumed_signals: list[Signal] = []
        self.cancelled_timers: list[int] = []
        self.search: dict[str, Any] = {}
        # Signals this turn sends to other jobs: (workflow_id, name, payload), sent in
        # the turn's own transaction, once (a marker step stops a replay resending).
        self.outgoing_signals: list[tuple[str, str, Any]] = []
        self.state: dict[str, Any] = {}
        # hm.patched() answers per change id, fixed by the first call of the run.
        self.patches: dict[str, bool] = {}
        self.suspended = False
        # Set by hm.continue_as_new(): the encoded arguments of the next run.
        self.continued: Any = None
        self.nondeterminism: NonDeterminismError | None = None
        # A recorded outcome or signal payload this process cannot unseal. Kept here
        # for the same reason: the turn must stop, whatever the workflow catches.
        self.codec_error: CodecError | None = None

    @property
    def buffered_signals(self) -> list[Signal]:
        """Signals sent to the job and not yet taken, read on first use."""
        if self._signals is None:
            self._signals = self._load_signals()
        return self._signals

    # -- step bookkeeping ------------------------------------------------------------

    def _next(self, kind: str, name: str) -> tuple[int, Activity | None]:
        self.seq += 1
        existing = self.steps.get(self.seq)
        if existing is not None and (existing.kind != kind or existing.name != name):
            error = NonDeterminismError(
                f"Step {self.seq}: the journal recorded {existing.kind.lower()} "
                f"{existing.name!r} but the code now calls {kind.lower()} {name!r}. "
                "Use hm.patched() to change a workflow under running jobs."
            )
            # Kept here too, so a user's broad `except Exception` cannot hide it.
            self.nondeterminism = error
            raise error
        return self.seq, existing

    def _add(self, **fields: Any) -> Activity:
        from hotmesh_django.models import Activity, JobStatus

        fields.setdefault("status", JobStatus.WAITING)
        step = Activity(job=self.job, seq=self.seq, created_at=self.db_now, **fields)
        self.steps[self.seq] = step
        self.new_steps.append(step)
        return step

    def _changed(self, step: Activity) -> None:
        if step not in self.new_steps and step not in self.changed_steps:
            self.changed_steps.append(step)

    def suspend(self) -> Suspend:
        self.suspended = True
        return Suspend()

    def resolve(self, seq: int) -> Any:
        """Return step `seq`'s result, raise its recorded error, or suspend."""
        from hotmesh_django.models import JobStatus, StepKind
        from hotmesh_django.serialization import Unreadable, from_json

        step = self.steps[seq]
        if step.kind == StepKind.SIGNAL and step.status == JobStatus.WAITING:
            self._try_signal(step)
        if step.kind == StepKind.SLEEP and step.status == JobStatus.WAITING:
            self._try_wake(step)
        if step.kind == StepKind.HUMAN and step.status == JobStatus.WAITING:
            self._try_expire(step)
        for value in (step.output, step.error):
            if isinstance(value, Unreadable):
                self.codec_error = value.error
                raise value.error
        if step.status == JobStatus.SUCCESSFUL:
            return from_json(step.output)
        if step.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            error = step.error or {}
            if step.kind == StepKind.HUMAN:
                raise HumanTaskTimeout(
                    error.get("message", f"The human task for {step.name!r} was not answered.")
                )
            if step.kind == StepKind.SIGNAL:
                raise SignalTimeout(error.get("message", f"Signal {step.name!r} timed out."))
            raise ActivityFailed(
                f"Step {seq} ({step.name}) failed: {error.get('type', 'Error')}: "
                f"{error.get('message', '')}",
                error_type=error.get("type", ""),
                error_message=error.get("message", ""),
                traceback=error.get("traceback", ""),
            )
        raise self.suspend()

    def is_done(self, seq: int) -> bool:
        from hotmesh_django.models import FINISHED_STATUSES, JobStatus, StepKind

        step = self.steps[seq]
        if step.kind == StepKind.SIGNAL and step.status == JobStatus.WAITING:
            self._try_signal(step)
        if step.kind == StepKind.SLEEP and step.status == JobStatus.WAITING:
            self._try_wake(step)
        return step.status in FINISHED_STATUSES

    def _try_wake(self, step: Activity) -> None:
        from hotmesh_django.models import JobStatus

        if step.wake_at is not None and step.wake_at <= self.db_now:
            step.status = JobStatus.SUCCESSFUL
            step.finished_at = self.db_now
            self._changed(step)

    def _try_signal(self, step: Activity) -> None:
        from hotmesh_django.models import JobStatus

        for signal in self.buffered_signals:
            if signal.name == step.name and signal.step is None:
                signal.step = step.seq
                self.consumed_signals.append(signal)
                step.status = JobStatus.SUCCESSFUL
                step.output = signal.payload
                step.finished_at = self.db_now
                self._changed(step)
                self.cancelled_timers.append(step.seq)
                return
        if step.wake_at is not None and step.wake_at <= self.db_now:
            step.status = JobStatus.FAILED
            step.error = {
                "type": "SignalTimeout",
                "message": f"No signal {step.name!r} arrived before the timeout.",
            }
            step.finished_at = self.db_now
            self._changed(step)

    def _try_expire(self, step: Activity) -> None:
        """Time out a human task's wait whose due time has passed on the turn's clock.

        An answer is written onto the step by `resolve_task` under the job's row lock,
        so a step still WAITING here was not answered; the engine expires its task in
        this turn's transaction.
        """
        from hotmesh_django.models import JobStatus

        if step.wake_at is not None and step.wake_at <= self.db_now:
            step.status = JobStatus.FAILED
            step.error = {
                "type": "HumanTaskTimeout",
                "message": f"No one in role {step.name!r} answered before the timeout.",
            }
            step.finished_at = self.db_now
            self._changed(step)

    # -- durable calls -----------------------------------------------------------------

    def call_activity(
        self,
        definition: ActivityDefinition[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> StepHandle:
        from hotmesh_django.definitions import positional_names
        from hotmesh_django.handles import StepHandle
        from hotmesh_django.models import JobStatus, StepKind
        from hotmesh_django.serialization import encode_call

        seq, existing = self._next(StepKind.ACTIVITY, definition.name)
        if existing is None:
            step = self._add(
                kind=StepKind.ACTIVITY,
                name=definition.name,
                queue=definition.options.queue or definition.queue,
                status=JobStatus.READY,
                input=encode_call(
                    args, kwargs, self.headers, names=positional_names(definition.func)
                ),
            )
            self.new_activity_calls.append((step, definition))
        return StepHandle(self, seq)

    def call_child(
        self,
        definition: WorkflowDefinition[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> StepHandle:
        from hotmesh_django.definitions import positional_names
        from hotmesh_django.handles import StepHandle
        from hotmesh_django.models import JobStatus, StepKind
        from hotmesh_django.serialization import encode_call

        seq, existing = self._next(StepKind.CHILD, definition.name)
        if existing is None:
            step = self._add(
                kind=StepKind.CHILD,
                name=definition.name,
                queue=definition.options.queue or definition.queue,
                status=JobStatus.RUNNING,
                input=encode_call(
                    args, kwargs, self.headers, names=positional_names(definition.func)
                ),
            )
            self.new_children.append((step, definition, step.input))
        return StepHandle(self, seq)

    def sleep(self, seconds: float) -> None:
        from hotmesh_django.models import StepKind

        seq, existing = self._next(StepKind.SLEEP, "sleep")
        if existing is None:
            step = self._add(
                kind=StepKind.SLEEP,
                name="sleep",
                input={"seconds": seconds},
                wake_at=self.db_now + datetime.timedelta(seconds=seconds),
            )
            self._try_wake(step)
            if step.status != "SUCCESSFUL":
                self.new_timers.append(step)
        self.resolve(seq)

    def wait_for_signal(self, name: str, timeout: float | None) -> Any:
        from hotmesh_django.models import StepKind

        seq, existing = self._next(StepKind.SIGNAL, name)
        if existing is None:
            wake_at = None
            if timeout is not None:
                wake_at = self.db_now + datetime.timedelta(seconds=timeout)
            step = self._add(
                kind=StepKind.SIGNAL,
                name=name,
                input={"timeout": timeout},
                wake_at=wake_at,
            )
            self._try_signal(step)
            if wake_at is not None and step.status != "SUCCESSFUL":
                self.new_timers.append(step)
        return self.resolve(seq)

    def wait_for_human(self, role: str, data: Any, timeout: float | None) -> Any:
        from hotmesh_django.models import JobStatus, StepKind

        seq, existing = self._next(StepKind.HUMAN, role)
        if existing is None:
            wake_at = None
            if timeout is not None:
                wake_at = self.db_now + datetime.timedelta(seconds=timeout)
            # The engine creates the step's HumanTask when it writes the turn.
            step = self._add(
                kind=StepKind.HUMAN,
                name=role,
                input={"data": data, "timeout": timeout},
                wake_at=wake_at,
            )
            self._try_expire(step)
            if wake_at is not None and step.status == JobStatus.WAITING:
                self.new_timers.append(step)
        return self.resolve(seq)

    def record(self, name: str, make: Any) -> Any:
        """Return the value recorded at this step, or record `make()` now."""
        from hotmesh_django.models import JobStatus, StepKind
        from hotmesh_django.serialization import from_json, to_json

        seq, existing = self._next(StepKind.VALUE, name)
        if existing is not None:
            return from_json(existing.output)
        drawn = self._draws.get(seq)
        if drawn is not None and drawn[0] == name and name in DRAWN:
            output = drawn[1]
            value = from_json(output)
        else:
            value = make()
            output = to_json(value, what=f"the value of {name}")
        self._add(
            kind=StepKind.VALUE,
            name=name,
            status=JobStatus.SUCCESSFUL,
            output=output,
            finished_at=self.db_now,
        )
        return value

    def drawn(self) -> dict[int, tuple[str, Any]]:
        """The values this replay drew (hm.now, hm.uuid4, hm.random), by step."""
        from hotmesh_django.models import StepKind

        return {
            s.seq: (s.name, s.output)
            for s in self.new_steps
            if s.kind == StepKind.VALUE and s.name in DRAWN
        }

    def send_signal(self, workflow_id: str, name: str, payload: Any) -> None:
        """Send signal `name` to the job `workflow_id` once, with this turn's write.

        The step records that it was sent, so a replay does not send it again. An
        unknown or finished job raises here, when the call first runs.
        """
        from hotmesh_django.engine.control import signal_target
        from hotmesh_django.serialization import check_signal_name, encode_value

        check_signal_name(name)
        encode_value(payload, what="the signal payload")  # a TypeError here, not at write

        def send() -> dict[str, str]:
            signal_target(workflow_id)
            self.outgoing_signals.append((workflow_id, name, payload))
            return {"workflow_id": workflow_id}

        # Cut to the step name column's 255 characters (a signal name may have 255).
        self.record(f"signal:{name}"[:255], send)

    def patched(self, change_id: str) -> bool:
        from hotmesh_django.models import JobStatus, StepKind

        # One answer per change id for the whole run, as the first call found it: a
        # job that took the old path once (say in a loop's first pass) keeps it, or
        # the run would mix old and new code.
        known = self.patches.get(change_id)
        if known is False:
            return False
        name = f"patched:{change_id}"
        upcoming = self.steps.get(self.seq + 1)
        if upcoming is not None and upcoming.kind == StepKind.VALUE and upcoming.name == name:
            self.seq += 1  # a marker this run recorded (earlier releases made one a call)
            self.patches[change_id] = True
            return True
        if known:
            return True
        if upcoming is None:
            self.seq += 1
            self._add(
                kind=StepKind.VALUE,
                name=name,
                status=JobStatus.SUCCESSFUL,
                output=True,
                finished_at=self.db_now,
            )
            self.patches[change_id] = True
            return True
        # History made before the change: keep the old path, take no step.
        self.patches[change_id] = False
        return False


# -- the public calls ----------------------------------------------------------------


def _seconds(value: float | datetime.timedelta) -> float:
    return to_seconds(value, "A duration")


def sleep(duration: float | datetime.timedelta) -> None:
    """Sleep durably: the workflow resumes after `duration`, even across restarts."""
    _require("sleep").sleep(_seconds(duration))


def wait_for_signal(name: str, timeout: float | datetime.timedelta | None = None) -> Any:
    """Wait for the signal `name` sent to this job and return its payload.

    Signals are buffered, so one sent before the wait is delivered. Raise
    SignalTimeout when `timeout` passes first.
    """
    from hotmesh_django.serialization import check_signal_name

    check_signal_name(name)
    ctx = _require("wait_for_signal")
    return ctx.wait_for_signal(name, None if timeout is None else _seconds(timeout))


def wait_for_human(
    role: str, data: Any = None, timeout: float | datetime.timedelta | None = None
) -> Any:
    """Ask a person in the auth Group `role` and return their JSON answer.

    Creates a HumanTask holding `data` that a member of the group claims and resolves
    (`hm.claim_task`, `hm.resolve_task`, or the admin); the workflow waits meanwhile.
    Raise HumanTaskTimeout (a SignalTimeout) when `timeout` passes first; the task is
    then EXPIRED and can no longer be answered.
    """
    from hotmesh_django.serialization import encode_value

    if not isinstance(role, str) or not role.strip() or len(role) > 150:
        raise ValueError(
            "A human task's role must be the name of an auth Group: a non-empty string "
            "of at most 150 characters."
        )
    ctx = _require("wait_for_human")
    encoded = encode_value(data, what="the human task's data")
    return ctx.wait_for_human(role, encoded, None if timeout is None else _seconds(timeout))


def gather(*handles: StepHandle | JobHandle) -> list[Any]:
    """Wait for every handle and return their results in order.

    Raise the first failure (in argument order) once all have finished.
    """
    from hotmesh_django.handles import StepHandle

    ctx = _require("gather")
    for handle in handles:
        if not isinstance(handle, StepHandle):
            raise TypeError(
                "hm.gather() takes handles from .start() inside a workflow, "
                f"not {type(handle).__name__}."
            )
    steps = [h for h in handles if isinstance(h, StepHandle)]
    if not all(ctx.is_done(h.seq) for h in steps):
        raise ctx.suspend()
    return [ctx.resolve(h.seq) for h in steps]


def now() -> datetime.datetime:
    """Return the current time, recorded on first run and replayed after."""
    ctx = current()
    if ctx is None:
        return timezone.now()
    return ctx.record("now", timezone.now)  # type: ignore[no-any-return]


def uuid4() -> _uuid.UUID:
    """Return a random UUID, recorded on first run and replayed after."""
    ctx = current()
    if ctx is None:
        return _uuid.uuid4()
    return ctx.record("uuid4", _uuid.uuid4)  # type: ignore[no-any-return]


def random() -> float:
    """Return a random float in [0, 1), recorded on first run and replayed after."""
    ctx = current()
    if ctx is None:
        return _random.random()  # noqa: S311 - not for secrets
    return ctx.record("random", _random.random)  # type: ignore[no-any-return]


def patched(change_id: str) -> bool:
    """Return True where new code may take its new path.

    Running jobs whose history was made before the change get False, so they keep
    replaying the old path; new runs record a marker and get True ever after.
    """
    if not isinstance(change_id, str) or not change_id or len(change_id) > _MAX_CHANGE_ID:
        raise ValueError(
            f"A change id must be a non-empty string of at most {_MAX_CHANGE_ID} characters, "
            f"not {change_id!r}."
        )
    from hotmesh_django.serialization import check_name_text

    check_name_text(change_id, f"The change id {change_id!r}")
    return _require("patched").patched(change_id)


# The marker step is named "patched:<change id>", in a 255-character column.
_MAX_CHANGE_ID = 255 - len("patched:")


def set_search(**attrs: Any) -> None:
    """Store searchable attributes on this job (shown and filterable in the admin).

    Raise TypeError for a name or value that is not JSON Postgres can store, and
    PayloadTooLarge when the job's attributes would pass HOTMESH_MAX_PAYLOAD_BYTES,
    as `.using(search=...)` does at start: here, not when the turn writes them, where
    the failing UPDATE would be retried turn after turn.
    """
    from hotmesh_django.serialization import encode_search

    ctx = _require("set_search")
    ctx.search.update(encode_search(attrs, {**ctx.job.search, **ctx.search}))


def set_state(**values: Any) -> None:
    """Publish values that `handle.state()` and `handle.query(name)` read without
    waking the workflow. Later calls merge into earlier ones; replays rewrite the
    same values, so the published state is always the latest turn's."""
    from hotmesh_django.serialization import encode_value

    ctx = _require("set_state")
    for key, value in values.items():
        ctx.state[key] = encode_value(value, what=f"state value {key!r}")


def continue_as_new(*args: Any, **kwargs: Any) -> NoReturn:
    """End this run and start a fresh run of the same workflow_id with these
    arguments and an empty history, so a long-lived loop never grows its journal
    without bound. Code after the call never runs. Raise TypeError (failing nothing)
    for arguments that are not JSON."""
    from hotmesh_django.exceptions import ContinueAsNew
    from hotmesh_django.serialization import encode_call

    ctx = _require("continue_as_new")
    ctx.continued = encode_call(args, kwargs, ctx.headers)
    raise ContinueAsNew(ctx.continued)
