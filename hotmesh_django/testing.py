"""Helpers for testing your own activities and workflows with a real worker.

Everything here runs against the real database of your test run, so the tests need
committed data that other connections can see: with pytest-django, mark them
`@pytest.mark.django_db(transaction=True)` (Django's `TransactionTestCase`).

- `run_workflow(definition, *args, timeout=30, **kwargs)` starts a job and runs an
  in-process worker until it finishes, then returns its result (or raises
  `WorkflowFailed`, like `handle.result()`).
- `skip_time()` makes durable timers fire at once while it is active, so a
  `hm.sleep(3600)` takes milliseconds.
- `check_crash_consistency(definition, *args, **kwargs)` kills a worker process at
  every transaction boundary of a run, resumes, and asserts that the result is the
  same and each step was recorded exactly once.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
from django.db import connection, connections, transaction

from hotmesh_django import faults
from hotmesh_django.engine.claim import requeue_expired
from hotmesh_django.engine.notify import WORK_CHANNEL, connect_raw, tables
from hotmesh_django.exceptions import WorkflowFailed
from hotmesh_django.handles import JobHandle
from hotmesh_django.models import FINISHED_STATUSES, Journal, JournalEvent, Stream
from hotmesh_django.models import Worker as WorkerRow
from hotmesh_django.worker import Worker

logger = logging.getLogger(__name__)

__all__ = [
    "CrashChecker",
    "CrashReport",
    "CrashRun",
    "TimeSkipper",
    "WorkerThread",
    "check_crash_consistency",
    "run_until_finished",
    "run_workflow",
    "skip_time",
]

# The environment variable a crash-test worker subprocess reads its setup from.
CHILD_ENV = "HOTMESH_TESTING_CHILD"


# -- running a workflow in-process ---------------------------------------------------


class WorkerThread:
    """A `Worker` running on a daemon thread of this process.

    Use it as a context manager: the worker stops (letting in-flight work finish)
    when the block ends, and an error that ended it early is raised there.
    """

    def __init__(self, *, concurrency: int = 4, queues: list[str] | None = None) -> None:
        self.worker = Worker(queues=queues, concurrency=concurrency, graceful_timeout=10.0)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hotmesh-test-worker", daemon=True)

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # noqa: BLE001 - raised again by stop()
            self.error = exc
        finally:
            connections.close_all()

    def start(self) -> WorkerThread:
        """Start the worker thread and return self."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the worker and wait for its thread; raise what ended it, if anything."""
        self.worker.stop()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"The test worker did not stop within {timeout} s.")
        if self.error is not None:
            raise self.error

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> WorkerThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _require_committed() -> None:
    if connection.in_atomic_block:
        raise RuntimeError(
            "The test is inside a transaction, so a worker (another connection) cannot "
            "see the job. Use @pytest.mark.django_db(transaction=True) or "
            "TransactionTestCase."
        )


def _describe(handle: JobHandle) -> str:
    job = handle.job()
    events = [
        f"{e.event}{'' if e.step is None else f'@{e.step}'}"
        for e in Journal.objects.filter(job=job).order_by("-id")[:8]
    ]
    return f"status {job.status}, last events {', '.join(reversed(events)) or 'none'}"


def run_until_finished(handle: JobHandle, *, timeout: float = 30.0, concurrency: int = 4) -> Any:
    """Run an in-process worker until the job of `handle` finishes; return its result.

    Raise WorkflowFailed (JobCancelled) when the job failed (was cancelled), and
    TimeoutError, with the job's status and latest journal events, when it does not
    finish within `timeout` seconds.
    """
    _require_committed()
    with WorkerThread(concurrency=concurrency):
        try:
            return handle.result(timeout=timeout)
        except TimeoutError:
            raise TimeoutError(
                f"Job {handle.id!r} did not finish within {timeout} s: {_describe(handle)}."
            ) from None


def run_workflow(definition: Any, *args: Any, timeout: float = 30.0, **kwargs: Any) -> Any:
    """Start `definition(*args, **kwargs)`, run it to the end in-process, return its result.

    `definition` is a workflow or an activity. A worker serving every queue runs on a
    thread of this process until the job finishes, then stops. Raise WorkflowFailed
    when the job fails, and TimeoutError after `timeout` seconds. Durable timers
    still take their real time unless `skip_time()` is active.
    """
    _require_committed()
    handle: JobHandle = definition.start(*args, **kwargs)
    return run_until_finished(handle, timeout=timeout)


# -- skipping time -------------------------------------------------------------------

# Due now: every scheduled message except a workflow's deadline timer (its turn would
# find the deadline not yet passed, and the timer would be gone) and, unless asked,
# the timeout timers of signal and human-task waits. Sleep steps get wake_at = now()
# too, because the replay compares the step's wake_at with the turn's clock.
_SKIP = """
WITH due AS (
    SELECT s.id, s.job_id, s.step FROM {stream} AS s
     WHERE s.status = 'SCHEDULED' AND s.visible_at > now()
       AND NOT (s.kind = 'TIMER' AND s.step IS NULL AND EXISTS (
               SELECT 1 FROM {job} AS j
                WHERE j.id = s.job_id AND j.deadline_at = s.visible_at))
       AND (%(timeouts)s OR NOT (s.kind = 'TIMER' AND EXISTS (
               SELECT 1 FROM {activity} AS a
                WHERE a.job_id = s.job_id AND a.seq = s.step AND a.kind IN ('SIGNAL', 'HUMAN'))))
       FOR UPDATE OF s SKIP LOCKED
), w AS (
    UPDATE {activity} AS a SET wake_at = now()
      FROM due
     WHERE a.job_id = due.job_id AND a.seq = due.step AND a.kind IN ('SLEEP', 'SIGNAL', 'HUMAN')
       AND a.status = 'WAITING' AND a.wake_at > now()
), m AS (
    UPDATE {stream} AS s SET visible_at = now() FROM due WHERE s.id = due.id RETURNING s.id
)
SELECT count(*), (SELECT count(*) FROM (
    SELECT pg_notify(%(channel)s, 't:0') WHERE EXISTS (SELECT 1 FROM m)) AS n)
  FROM m
"""


class TimeSkipper:
    """Make scheduled messages due at once, over and over, on a background thread."""

    def __init__(self, *, timeouts: bool, interval: float, using: str) -> None:
        self.timeouts = timeouts
        self.interval = interval
        self.using = using
        self.skipped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hotmesh-skip-time", daemon=True)

    def start(self) -> TimeSkipper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10.0)

    def skip_now(self, conn: psycopg.Connection[Any]) -> int:
        """Make what is scheduled due now; return how many messages moved."""
        sql = _SKIP.format(**tables())
        row = conn.execute(sql, {"timeouts": self.timeouts, "channel": WORK_CHANNEL}).fetchone()
        moved = int(row[0]) if row else 0
        self.skipped += moved
        return moved

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with connect_raw(self.using) as conn:
                    while True:
                        self.skip_now(conn)
                        if self._stop.wait(self.interval):
                            return
            except psycopg.Error as exc:
                logger.warning("skip_time failed error=%s", exc)
                self._stop.wait(self.interval)


@contextmanager
def skip_time(
    *, timeouts: bool = False, interval: float = 0.05, using: str = "default"
) -> Iterator[TimeSkipper]:
    """While active, fire durable timers at once: `hm.sleep(3600)` returns at once.

    Every `interval` seconds, scheduled messages (durable sleeps, retry back-offs,
    delayed starts, parked jobs) are made due now and the workers are woken. With
    `timeouts=True` the timeouts of `hm.wait_for_signal` and `hm.wait_for_human`
    fire at once too. A workflow's own `timeout=` is left alone. Time is skipped,
    not faked: `hm.now()` still reads the real clock.
    """
    skipper = TimeSkipper(timeouts=timeouts, interval=interval, using=using).start()
    try:
        yield skipper
    finally:
        skipper.stop()


# -- crash consistency ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class CrashRun:
    """One run killed at one crash point and resumed."""

    index: int  # the Nth point reached in the process (1-based)
    expected_point: str  # the point's name in the reference run
    died_at: str | None  # the point the worker process exited at (None: it did not)
    exit_code: int | None  # the worker subprocess's exit code
    log_tail: str  # the end of the worker subprocess's output
    workflow_id: str
    outcome: tuple[str, Any]
    step_counts: dict[int, int]
    leftover_messages: int
    problems: tuple[str, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class CrashReport:
    """What `check_crash_consistency` found."""

    workflow: str
    reference: tuple[str, Any]  # ("result", value) or ("failed", error type)
    points: tuple[str, ...]  # the crash points a normal run reaches, in order
    runs: tuple[CrashRun, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def problems(self) -> list[str]:
        return [
            f"crash #{r.index} ({r.expected_point}): {p}" for r in self.runs for p in r.problems
        ]

    @property
    def crashes(self) -> int:
        """How many runs the worker really died in."""
        return sum(1 for r in self.runs if r.died_at is not None)

    def __str__(self) -> str:
        lines = [
            f"{self.workflow}: {len(self.runs)} crash runs over {len(self.points)} points "
            f"({self.crashes} crashed), reference {self.reference[0]} {self.reference[1]!r}",
        ]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


def _outcome(handle: JobHandle, timeout: float) -> tuple[str, Any]:
    try:
        return ("result", run_until_finished(handle, timeout=timeout))
    except WorkflowFailed as exc:
        return ("failed", exc.type)


def _step_counts(workflow_id: str) -> dict[int, int]:
    steps = Journal.objects.filter(
        job__workflow_id=workflow_id, event=JournalEvent.STEP_COMPLETED
    ).values_list("step", flat=True)
    return dict(Counter(s for s in steps if s is not None))


@dataclasses.dataclass(frozen=True, kw_only=True)
class CrashChecker:
    """Kill a worker process at each crash point of a workflow run, and resume.

    For each N up to `max_points`, a fresh job runs on a worker subprocess started
    with `HOTMESH_FAULTS=*:N`, which exits like SIGKILL at the Nth transaction
    boundary it reaches (`hotmesh_django.faults` lists them: after a claim, before
    a step runs, after it returned but before its ack, after the ack and after a
    turn commit). The dead worker's leases are released as the rescue would, an
    in-process worker finishes the job, and the run is compared with a normal one.
    """

    definition: Any
    max_points: int = 40
    timeout: float = 60.0
    # One runner thread keeps the order of the points the same from run to run.
    concurrency: int = 1
    raise_on_failure: bool = True

    def run(self, *args: Any, **kwargs: Any) -> CrashReport:
        """Check the workflow called with `args` and `kwargs`; return the report.

        Raise AssertionError listing the problems (unless `raise_on_failure` is
        False): a different result, a step recorded more or less than once than in
        the normal run, or messages left behind.
        """
        _require_committed()
        tag = uuid.uuid4().hex[:8]
        reference_handle = self._start(f"crashcheck-{tag}-ref", args, kwargs)
        with faults.record() as names:
            reference = self._reference(reference_handle)
        points = tuple(names)
        expected_steps = _step_counts(reference_handle.id)
        runs: list[CrashRun] = []
        for index in range(1, min(len(points), self.max_points) + 1):
            handle = self._start(f"crashcheck-{tag}-{index}", args, kwargs)
            died_at, exit_code, log_tail = self._crash(index, handle)
            outcome = _outcome(handle, self.timeout)
            counts = _step_counts(handle.id)
            leftover = Stream.objects.filter(job__workflow_id=handle.id).count()
            problems: list[str] = []
            if outcome != reference:
                problems.append(f"outcome {outcome!r} differs from the normal run's {reference!r}")
            doubled = {s: n for s, n in counts.items() if n > 1}
            if doubled:
                problems.append(f"steps recorded more than once (step: times): {doubled}")
            if set(counts) != set(expected_steps):
                problems.append(
                    f"steps completed {sorted(counts)}, the normal run {sorted(expected_steps)}"
                )
            if leftover:
                problems.append(f"{leftover} messages left in the stream")
            runs.append(
                CrashRun(
                    index=index,
                    expected_point=points[index - 1],
                    died_at=died_at,
                    exit_code=exit_code,
                    log_tail=log_tail,
                    workflow_id=handle.id,
                    outcome=outcome,
                    step_counts=counts,
                    leftover_messages=leftover,
                    problems=tuple(problems),
                )
            )
        report = CrashReport(
            workflow=str(self.definition.name),
            reference=reference,
            points=points,
            runs=tuple(runs),
        )
        if self.raise_on_failure and not report.ok:
            raise AssertionError(str(report))
        return report

    def _start(self, workflow_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> JobHandle:
        handle: JobHandle = self.definition.using(workflow_id=workflow_id).start(*args, **kwargs)
        return handle

    def _reference(self, handle: JobHandle) -> tuple[str, Any]:
        try:
            with WorkerThread(concurrency=self.concurrency):
                return ("result", handle.result(timeout=self.timeout))
        except WorkflowFailed as exc:
            return ("failed", exc.type)

    def _crash(self, index: int, handle: JobHandle) -> tuple[str | None, int | None, str]:
        """Run a worker subprocess that dies at point `index`.

        Return (the point it died at or None, its exit code, the end of its log).
        """
        with tempfile.NamedTemporaryFile("w+b", prefix="hotmesh-crash-", suffix=".log") as log:
            proc = _spawn_child(
                log,
                imports=[self.definition.func.__module__],
                concurrency=self.concurrency,
                faults_spec=f"{faults.ANY}:{index}",
            )
            deadline = time.monotonic() + self.timeout
            try:
                while proc.poll() is None and not _finished(handle) and time.monotonic() < deadline:
                    time.sleep(0.02)
            finally:
                if proc.poll() is None:
                    # It never reached point `index` (a run may take fewer): stop it.
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(timeout=10)
            log.seek(0)
            text = log.read().decode(errors="replace")
        tail = text[-4000:]
        if proc.returncode != faults.EXIT_CODE:
            return None, proc.returncode, tail
        _release(proc.pid)
        return faults.exit_point(text) or "?", proc.returncode, tail


def check_crash_consistency(definition: Any, *args: Any, **kwargs: Any) -> CrashReport:
    """Kill a worker at every crash point of a run of `definition`, resume, compare.

    Run the workflow once normally for the reference result and the list of crash
    points it reaches; then, for each point (at most 40), run it again in a fresh
    job on a worker subprocess that exits there, resume it with a normal worker,
    and assert the same outcome with each step's `step_completed` recorded exactly
    once and no message left behind. Return the CrashReport; raise AssertionError
    listing the problems. Use `CrashChecker(...)` for other bounds.

    Each run is a new job with the same arguments, so side effects keyed only by
    the arguments happen once per run.
    """
    return CrashChecker(definition=definition).run(*args, **kwargs)


def _finished(handle: JobHandle) -> bool:
    return handle.status() in FINISHED_STATUSES


def _release(pid: int) -> None:
    """Do what the rescue does for a dead worker, without waiting for its lease."""
    ids = list(WorkerRow.objects.filter(pid=pid).values_list("id", flat=True))
    if ids:
        with transaction.atomic():
            requeue_expired(workers=ids)
            WorkerRow.objects.filter(id__in=ids).delete()


def _spawn_child(
    log: Any, *, imports: list[str], concurrency: int, faults_spec: str
) -> subprocess.Popen[bytes]:
    from django.conf import settings as django_settings

    config = {
        "database": connection.settings_dict["NAME"],
        "imports": imports,
        "concurrency": concurrency,
    }
    # Under override_settings the settings object no longer knows its module (Django's
    # UserSettingsHolder has SETTINGS_MODULE = None); the environment still does.
    settings_module = django_settings.SETTINGS_MODULE or os.environ.get("DJANGO_SETTINGS_MODULE")
    if not settings_module:
        raise RuntimeError("The crash checker needs DJANGO_SETTINGS_MODULE to start a worker.")
    paths = [p for p in sys.path if p and Path(p).exists()]
    env = {
        **os.environ,
        CHILD_ENV: json.dumps(config),
        faults.ENV: faults_spec,
        "DJANGO_SETTINGS_MODULE": settings_module,
        "PYTHONPATH": os.pathsep.join([os.getcwd(), *paths]),
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", _CHILD_BOOTSTRAP],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


# Point the settings at the parent's test database (which the settings module does
# not name) before Django sets up; this module imports models, so it comes after.
_CHILD_BOOTSTRAP = f"""
import json, os
import django
from django.conf import settings
settings.DATABASES["default"]["NAME"] = json.loads(os.environ["{CHILD_ENV}"])["database"]
django.setup()
from hotmesh_django.testing import child_main
child_main()
"""


def child_main() -> None:
    """Run a worker in a crash-test subprocess (configured by HOTMESH_TESTING_CHILD)."""
    from hotmesh_django.conf import settings

    config = json.loads(os.environ[CHILD_ENV])
    for module in [*settings.imports, *config["imports"]]:
        importlib.import_module(module)
    worker = Worker(concurrency=int(config["concurrency"]), graceful_timeout=10.0)

    def stop(signum: int, frame: FrameType | None) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.run()
