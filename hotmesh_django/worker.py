"""The worker: claim messages from topic queues and run them, one process of a pool.

Threads in a worker process:
- the main loop promotes due timers and claims up to the free slots, in one short
  statement per queue, rotating the queues so a busy one cannot starve the others;
- `concurrency` runner threads execute claimed messages (each has its own database
  connection, as Django keeps one per thread);
- a listener holds a LISTEN connection and, on a NOTIFY for a queue while runners
  are idle, claims on that same connection at once (otherwise it wakes the main
  loop), so polling (HOTMESH_POLL_INTERVAL_SECONDS) is only the floor;
- a heartbeat touches the Worker row, extends this worker's leases and, as whichever
  worker wins an advisory lock, requeues the messages of dead workers.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue as queue_mod
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
)
from django.db.models.functions import Now

from hotmesh_django import faults, metrics, registry, tracing
from hotmesh_django.conf import settings
from hotmesh_django.engine import claim as claims
from hotmesh_django.engine import prepared, prune, schedules
from hotmesh_django.engine import queues as queue_control
from hotmesh_django.engine.acks import AckBatcher
from hotmesh_django.engine.conflicts import retry_on_conflict
from hotmesh_django.engine.execute import Handoff, release_after_loss, run_step, session_lost
from hotmesh_django.engine.notify import WORK_CHANNEL, tables
from hotmesh_django.engine.turn import Local, forget_draws, run_turn
from hotmesh_django.models import Worker as WorkerRow
from hotmesh_django.redaction import get_logger

logger = get_logger(__name__)

# Burst mode exits only when nothing scheduled is due sooner than this.
BURST_HORIZON_SECONDS = 2.0

# Under a backlog a worker holds claimed messages queued behind its running ones, so
# a runner that finishes never waits for a claim's round trip. For messages shorter
# than LONG_RUN_SECONDS on average it holds about QUEUED_SECONDS of work per runner
# (at least one batch queued, at most MAX_PREFETCH - 1): most of what a claim or an
# ack costs is per statement (a round trip, a commit), so short messages want big
# batches (a 10,000-job drain: 7,955 jobs/s holding 4 batches, 11,129 holding 16);
# none beyond (a claim is then a rounding error, and what a worker holds is what an idle
# worker elsewhere cannot run).
LONG_RUN_SECONDS = 0.1
QUEUED_SECONDS = 0.02
MAX_PREFETCH = 16


def _backoff(failures: int) -> float:
    """Seconds to wait after `failures` failed tries to reach the database."""
    return min(30.0, 0.2 * 2.0 ** min(failures, 8))


def _jitter(seconds: float) -> float:
    return seconds * random.uniform(0.9, 1.1)  # noqa: S311 - not for secrets


def dispatch(message: claims.Claimed, local: Local, held: set[int] | None = None) -> bool:
    """Run one claimed message, then whatever step its ack handed this worker.

    `held` is the set of message ids whose leases the heartbeat extends: a message
    handed over is added while it runs and removed when it is done. Return True when
    the last message's ack went to `local.acks`: it stays held until that commits.
    """
    following: claims.Claimed | None = message
    while following is not None:
        current = following
        forget_draws()
        if current is not message and local.is_stopping():
            # Handed over just before the worker began to stop: left RUNNING under
            # this worker, for its shutdown to release (uncounted), not started now.
            break
        if held is not None:
            held.add(current.id)
        pending = False
        try:
            # The runner was woken while the claim's commit was still being flushed
            # (engine/early.py); user code runs after it. One that did not commit
            # left the message READY, its attempt uncounted: another claim runs it.
            if not current.claim_committed():
                logger.warning("claim did not commit, message left job=%s", current.job_id)
                break
            if current.kind in ("TURN", "TIMER"):
                with tracing.span("hotmesh.turn", job_id=current.job_id, queue=current.queue):
                    following = retry_on_conflict(
                        functools.partial(run_turn, current, local), what="turn"
                    )
                faults.point("turn_commit")
            else:
                outcome = run_step(current, local)
                pending = outcome is Handoff.ACK_PENDING
                following = outcome if isinstance(outcome, claims.Claimed) else None
        finally:
            if held is not None and not pending:
                held.discard(current.id)
        if pending:
            return True
    return False


class Worker:
    """Run messages from `queues` (None: every queue) with `concurrency` threads."""

    def __init__(
        self,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int = 1,
        burst: bool = False,
        graceful_timeout: float = 30.0,
        worker_id: uuid.UUID | None = None,
        listen: bool | None = None,
    ) -> None:
        self.id = worker_id or uuid.uuid4()
        self.all_queues = not queues
        self.queues: list[str] = list(queues or [])
        self.concurrency = concurrency
        self.burst = burst
        # None: the HOTMESH_LISTEN setting decides; False polls only (PgBouncer).
        self.listen = settings.listen if listen is None else listen
        if not self.listen:
            # Polling only means a pooler may sit in between: no session state.
            prepared.disable()
        self.graceful_timeout = graceful_timeout
        self.processed = 0
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._inbox: queue_mod.Queue[claims.Claimed | None] = queue_mod.Queue()
        self._lock = threading.Lock()
        # Held while claiming: the main loop and the listener both claim into the
        # free slots, and must not both count the same slot free.
        self._claim_lock = threading.Lock()
        self._in_flight = 0
        # Of those in flight, the ones whose ack waits for its batch's commit.
        self._acking = 0
        # A moving average of how long a runner takes per message (see _free).
        self.run_seconds = LONG_RUN_SECONDS
        self._idle = threading.Condition(self._lock)
        self._next_due: float | None = 0.0  # monotonic time; 0 = look now
        self._rotation = 0
        self._threads: list[threading.Thread] = []
        self._paused: set[str] = set()
        self._hot: set[str] = set()
        # Ids of the messages claimed and not yet finished (queued or running).
        self._held: set[int] = set()
        self._last_full = 0.0
        self._backlog = False
        self._paused_stale = True  # read the paused queues on the first tick
        self._acks: AckBatcher | None = None

    # -- control -----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming; run() returns once in-flight messages finish."""
        self._stopping.set()
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # -- main loop ---------------------------------------------------------------------

    def run(self) -> None:
        """Work until stop() (or, with burst, until the queues are empty)."""
        self._register_when_up()
        if self._stopping.is_set():
            # Stopped while waiting for the database (or just after it answered):
            # nothing was claimed or started; a row just registered goes too.
            with contextlib.suppress(DatabaseError):
                WorkerRow.objects.filter(id=self.id).delete()
            logger.warning("worker stopped before it began to work id=%s", self.id)
            return
        self._acks = AckBatcher(worker_id=self.id, on_done=self._ack_done).start()
        targets = {"heartbeat": self._heartbeat}
        if self.listen:
            targets["listen"] = self._listen
        threads = [
            threading.Thread(target=target, name=f"hotmesh-{name}", daemon=True)
            for name, target in targets.items()
        ]
        threads += [
            threading.Thread(target=self._runner, name=f"hotmesh-run-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        self._threads = threads
        for thread in threads:
            thread.start()
        logger.info(
            "worker started id=%s queues=%s concurrency=%s wake=%s",
            self.id,
            ",".join(self.queues) or "*",
            self.concurrency,
            "listen" if self.listen else "poll",
        )
        # A random start-up delay spreads a fleet restarted at once.
        self._stopping.wait(random.uniform(0, 0.05))  # noqa: S311
        failures = 0
        try:
            while not self._stopping.is_set():
                try:
                    claimed = self._tick()
                    failures = 0
                except (OperationalError, InterfaceError) as exc:
                    failures += 1
                    self._database_away(exc, failures)
                    continue
                if self.burst and claimed == 0 and self._drained():
                    # Look once more, at every queue: a runner that finished after the
                    # claim above may have queued the next turn (in_flight is 0, so it
                    # committed) and its NOTIFY may not have reached us yet.
                    if self._tick(full=True) == 0:
                        if not self._ready_left():
                            break
                        # The claim found nothing, yet READY work exists: SKIP LOCKED
                        # passed over rows another transaction held at that instant.
                        self._stopping.wait(0.05)
                    continue
                if claimed == 0 or self._free() == 0:
                    self._wait()
        finally:
            self._shutdown()

    def _tick(self, *, full: bool = False) -> int:
        """Claim into free slots, then promote due timers; return how many claimed.

        `full` looks at every queue now, not only at the ones a NOTIFY named.
        """
        # Cleared before looking, so a NOTIFY that lands while we claim is not lost.
        self._wake.clear()
        now = time.monotonic()
        # Every poll interval look at every queue; in between only at queues that a
        # NOTIFY named or that had more work last time, so idle queues cost nothing.
        full = full or now - self._last_full >= settings.poll_interval_seconds
        if full:
            self._last_full = now
            if self.burst:
                self._last_discovery = 0.0  # a new queue must not end a burst early
            # The polling floor covers timers too: a "t:" NOTIFY is lost while the
            # listener reconnects, and there is none at all in poll-only mode.
            self._next_due = now
        if self._paused_stale:
            self._refresh_paused()
        # Claim first: a worker woken for new work starts it before its housekeeping
        # (promoting timers, discovering queues), each of which is a round trip.
        claimed = self._claim_round(full=full)
        woken: set[str] = set()
        if self._next_due is not None and self._next_due <= time.monotonic():
            woken, seconds = claims.promote_due()
            self._next_due = None if seconds is None else time.monotonic() + max(seconds, 0.0)
        if self.all_queues:
            woken |= self._discover_queues()
        if woken:
            # What was just promoted or found is claimed in this tick, not the next.
            self._hot |= woken
            claimed += self._claim_round(full=False)
        return claimed

    def _claim_round(self, *, full: bool) -> int:
        """Claim into the free slots from the hot queues (all of them when `full`),
        rotating the start so a busy queue cannot starve the others."""
        with self._claim_lock:
            if self._stopping.is_set():
                return 0
            return self._claim_into_free(full=full)

    def _claim_into_free(self, *, full: bool) -> int:
        free = self._free()
        if free <= 0 or not self._worth_claiming(free):
            return 0  # and what is known of the backlog stays as the last claim left it
        claimed = 0
        queues = [q for q in self.queues if q not in self._paused and (full or q in self._hot)]
        backlog = False
        for i in range(len(queues)):
            if free <= 0:
                break
            queue = queues[(self._rotation + i) % len(queues)]
            # Dropped before the claim: a NOTIFY arriving meanwhile puts it back.
            self._hot.discard(queue)
            began = time.monotonic()
            with self._claim(queue, free) as batch:
                metrics.observe_claim(queue, time.monotonic() - began, len(batch))
                if len(batch) == free:
                    self._hot.add(queue)  # a full batch: there may be more
                    backlog = True
                for message in batch:
                    with self._lock:
                        self._in_flight += 1
                    self._held.add(message.id)
                    self._inbox.put(message)
            claimed += len(batch)
            free -= len(batch)
        self._rotation += 1
        self._backlog = backlog
        return claimed

    @contextlib.contextmanager
    def _claim(self, queue: str, limit: int) -> Iterator[list[claims.Claimed]]:
        """Claim up to `limit` messages of `queue` and hand them to the runners inside
        the block: it is entered before the claim's commit has finished and left once
        it has (engine/early.py); each runner waits for the commit itself."""
        lease = settings.lease_seconds
        limits = queue_control.limits_for(queue)
        if limits is not None:
            yield queue_control.claim_limited(
                queue=queue, limits=limits, worker_id=self.id, limit=limit, lease_seconds=lease
            )
        elif not prepared.enabled():
            # Through a pooler: no pipeline, whose implicit transaction it would not keep.
            yield claims.claim(queue=queue, worker_id=self.id, limit=limit, lease_seconds=lease)
        else:
            with claims.claim_early(
                queue=queue, worker_id=self.id, limit=limit, lease_seconds=lease
            ) as batch:
                yield batch

    def prefetch(self) -> int:
        """Runners' worth of messages to hold under a backlog (running + queued)."""
        if self.run_seconds >= LONG_RUN_SECONDS:
            return 1
        ahead = int(QUEUED_SECONDS / max(self.run_seconds, 1e-6))
        return max(2, min(MAX_PREFETCH, ahead))

    def _worth_claiming(self, free: int) -> bool:
        """Under a backlog, wait for room for half of what the worker may hold while
        the runners still have claimed work queued: much of what a claim costs is per
        statement (a round trip, a commit), so claiming per finished job would cost
        more than the jobs."""
        if not self._backlog or self._inbox.empty():
            return True
        return free >= max(1, self._capacity() // 2)

    def _refresh_paused(self) -> None:
        # Cleared before the read: a pause that lands meanwhile marks it stale again.
        self._paused_stale = False
        self._paused = queue_control.paused_queues()

    def _local(self) -> Local:
        queues = None if self.all_queues else frozenset(self.queues)
        return Local(
            worker_id=self.id,
            queues=queues,
            lease_seconds=settings.lease_seconds,
            excluded=frozenset(settings.queues),
            acks=self._acks,
            stopping=self._stopping,
            paused=self._paused_now,
        )

    def _paused_now(self) -> set[str]:
        return self._paused  # replaced whole on refresh, never changed in place

    def _free(self) -> int:
        # Under a backlog hold messages queued behind the running ones (how many:
        # prefetch()); otherwise claim only what can start now, leaving the rest to
        # idle workers elsewhere.
        capacity = self._capacity()
        # A message whose ack only waits for its batch to commit holds no runner: up
        # to `capacity` of them do not count, so runners keep working through the
        # commit. Beyond that the database is what is slow, and claiming more would
        # only pile up acks (each one still holds its lease until it commits).
        return capacity - self._in_flight + min(self._acking, capacity)

    def _capacity(self) -> int:
        return self.concurrency * (self.prefetch() if self._backlog else 1)

    def _wait(self) -> None:
        # Jitter spreads the polling of a fleet; a due timer is waited for exactly.
        timeout = _jitter(settings.poll_interval_seconds)
        if self._next_due is not None:
            timeout = min(timeout, max(0.0, self._next_due - time.monotonic()))
        self._wake.wait(timeout)

    def _refresh_next_due(self) -> None:
        seconds = claims.seconds_until_next_due()
        self._next_due = None if seconds is None else time.monotonic() + max(seconds, 0.0)

    def _drained(self) -> bool:
        if self._in_flight:
            return False
        self._refresh_next_due()
        if self._next_due is not None and self._next_due - time.monotonic() < BURST_HORIZON_SECONDS:
            return False
        return self._in_flight == 0

    def _ready_left(self) -> bool:
        """Whether a READY message this burst worker serves still exists."""
        queues = None if self.all_queues else list(self.queues)
        return claims.ready_exists(queues=queues, excluded=sorted(self._paused))

    _last_discovery = 0.0

    def _discover_queues(self) -> set[str]:
        """Every few seconds, look for queues with ready work; return the new ones."""
        now = time.monotonic()
        if now - self._last_discovery < 5.0 and self.queues:
            return set()
        self._last_discovery = now
        # A loose index scan over the ready index: one probe per distinct queue.
        sql = """
        WITH RECURSIVE q AS (
            (SELECT queue FROM {stream} WHERE status = 'READY' ORDER BY queue LIMIT 1)
            UNION ALL
            SELECT (SELECT queue FROM {stream}
                     WHERE status = 'READY' AND queue > q.queue ORDER BY queue LIMIT 1)
              FROM q WHERE q.queue IS NOT NULL
        )
        SELECT queue FROM q WHERE queue IS NOT NULL
        """.format(**tables())  # noqa: S608 - table names from _meta
        with connection.cursor() as cursor:
            cursor.execute(sql)
            found = {row[0] for row in cursor.fetchall()}
        known = found | registry.queues() | set(settings.queues) | set(self.queues)
        new = known - set(self.queues)
        self.queues = sorted(known)
        return new

    def _reset_connection(self) -> None:
        with contextlib.suppress(DatabaseError):
            connection.close()

    # -- runner threads ----------------------------------------------------------------

    def _runner(self) -> None:
        while True:
            message = self._inbox.get()
            if message is None:
                connection.close()
                return
            pending = False
            began = time.monotonic()
            try:
                pending = dispatch(message, self._local(), self._held)
            except (OperationalError, InterfaceError) as exc:
                logger.exception("database error running message id=%s", message.id)
                if session_lost(exc):
                    self._release(message, exc)
                else:
                    # Not the session: the lease expires and another worker re-runs
                    # it, paced by the lease rather than in a tight loop.
                    self._reset_connection()
            except Exception:
                logger.exception("engine error running message id=%s", message.id)
                close_old_connections()
            finally:
                # Racy across runners, which only blurs an average.
                self.run_seconds += (time.monotonic() - began - self.run_seconds) / 8
                if pending:
                    self._handed_to_acks()
                else:
                    self._finished()

    def _release(self, message: claims.Claimed, exc: BaseException) -> None:
        # The session died mid-message: hand it back now rather than after the lease
        # (if the database is still away, the lease expires and the rescue does it).
        try:
            release_after_loss(message, self.id, exc)
        except DatabaseError as again:
            logger.warning("could not release message id=%s error=%s", message.id, again)
            self._reset_connection()

    def _handed_to_acks(self) -> None:
        with self._lock:
            self._acking += 1
        self._wake.set()  # a runner is free

    def _ack_done(self, message: claims.Claimed, acked: bool) -> None:
        """The AckBatcher wrote (or gave up on) the ack of `message`."""
        self._held.discard(message.id)
        with self._lock:
            self._acking -= 1
        self._finished()

    def _finished(self) -> None:
        # A message is done once its ack committed: until then it is in flight (a
        # stopping worker waits for it), though its runner is free (see _free).
        with self._lock:
            self._in_flight -= 1
            self.processed += 1
            self._idle.notify_all()
        self._wake.set()

    # -- listener ----------------------------------------------------------------------

    def _listen(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                raw = self._subscribe()
                failures = 0
                # Notifications sent while we were disconnected are gone: look at
                # every queue and at the timers once.
                self._next_due = 0.0
                self._last_full = 0.0
                self._wake.set()
                # Django may replace this thread's connection (a failed health
                # check): the new session has not run LISTEN, so subscribe again.
                while not self._stopping.is_set() and connection.connection is raw:
                    # A short timeout so a stopping worker (a test's in-process one
                    # above all) is not held up by its listener. Notifications that
                    # arrive while this connection claims are kept by psycopg and
                    # come out of the next call.
                    named = False
                    for note in raw.notifies(timeout=0.2, stop_after=1):
                        named |= self._on_notify(note.payload)
                    if named and not self._claim_here():
                        self._wake.set()
            except Exception as exc:  # noqa: BLE001 - reconnect on anything
                failures += 1
                if not self._stopping.is_set():
                    logger.debug("listener reconnecting error=%s", exc)
                self._reset_connection()
                self._stopping.wait(_jitter(min(10.0, 0.2 * 2 ** min(failures, 6))))
        connection.close()

    def _subscribe(self) -> Any:
        """LISTEN on this thread's own Django connection; return its psycopg one."""
        with connection.cursor() as cursor:
            cursor.execute(f"LISTEN {WORK_CHANNEL}")
        return connection.connection

    def _claim_here(self) -> bool:
        """Claim what a NOTIFY named right here, on the connection that received it,
        when runners are idle; return False to leave it to the main loop.

        Handing over to the main loop costs an idle worker two more wake-ups (the
        main thread, then its own database session) before the claim is even sent,
        which is most of an idle pickup on a virtual machine. Under a backlog the
        main loop claims in batches anyway.
        """
        if self._backlog or self._free() <= 0:
            return False
        if self._paused_stale:
            self._refresh_paused()  # a queue was paused or resumed just now
        self._claim_round(full=False)
        # A full batch: there may be more, which is the main loop's to claim.
        return not self._backlog

    def _on_notify(self, payload: str) -> bool:
        """Note what a NOTIFY says; return True when it named a queue served here
        (left in `_hot` for the claim that follows)."""
        kind, _, value = payload.partition(":")
        if kind == "q":
            if self.all_queues and value not in self.queues:
                self.queues = sorted({*self.queues, value})
            if value in self.queues:
                self._hot.add(value)
                return True
        elif kind == "t":
            self._next_due = 0.0  # look again: a timer may be due sooner now
            self._wake.set()
        elif payload == "c:queues":
            self._paused_stale = True  # a queue was paused or resumed
            self._wake.set()
        return False

    # -- heartbeat ---------------------------------------------------------------------

    def _heartbeat(self) -> None:
        while not self._stopping.wait(_jitter(settings.heartbeat_seconds)):
            try:
                self._beat()
            except Exception as exc:  # noqa: BLE001 - keep beating through outages
                logger.warning("heartbeat failed error=%s", exc)
                self._reset_connection()
        connection.close()

    def _beat(self) -> None:
        lease = settings.lease_seconds
        fields = self._row_fields()
        if not WorkerRow.objects.filter(id=self.id).update(last_seen=Now(), **fields):
            self._register()  # another worker took us for dead; we are back
        # Only the messages this process is really working on: a row it lost track
        # of (a reply lost with its connection, a database error mid-run) must
        # expire and be rescued, not be kept alive by a live worker forever.
        claims.extend_leases(worker_id=self.id, ids=list(self._held), lease_seconds=lease)
        self._refresh_paused()  # the floor under the pause/resume NOTIFY
        claims.rescue(stale_seconds=self._stale_seconds())
        # Cron slots and retention, each run by whichever worker wins its lock.
        schedules.tick()
        prune.auto_prune()

    def _row_fields(self) -> dict[str, object]:
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": self.queues if not self.all_queues else ["*"],
            "concurrency": self.concurrency,
            "in_flight": self._in_flight,
            "stale_seconds": self._stale_seconds(),
        }

    @staticmethod
    def _stale_seconds() -> float:
        """How long a worker with these settings may go unseen and still be alive:
        a lease, and at least three heartbeats."""
        return max(settings.lease_seconds, 3 * settings.heartbeat_seconds)

    def _register_when_up(self) -> None:
        """Register, waiting with backoff while the database is away: a worker that
        starts during an outage (or whose first session is killed) waits for it."""
        failures = 0
        while not self._stopping.is_set():
            try:
                self._register()
                return
            except (OperationalError, InterfaceError) as exc:
                failures += 1
                self._database_away(exc, failures)

    def _database_away(self, exc: BaseException, failures: int) -> None:
        """Log, drop the connection and wait with backoff and jitter before retrying."""
        delay = _backoff(failures)
        logger.warning("database unavailable error=%s retry_in=%.1f", exc, delay)
        self._reset_connection()
        self._stopping.wait(_jitter(delay))

    def _register(self) -> None:
        WorkerRow.objects.update_or_create(id=self.id, defaults=self._row_fields())

    # -- shutdown ----------------------------------------------------------------------

    def _shutdown(self) -> None:
        self._stopping.set()
        with self._claim_lock:
            pass  # a claim under way counts its messages in flight before we wait
        # The roll-call shows it draining: alive, finishing its work, claiming none.
        # (If the database is away, the release below says so.)
        with contextlib.suppress(DatabaseError):
            WorkerRow.objects.filter(id=self.id).update(paused=True)
        deadline = time.monotonic() + self.graceful_timeout
        with self._lock:
            while self._in_flight and time.monotonic() < deadline:
                self._idle.wait(timeout=max(0.0, deadline - time.monotonic()))
            left = self._in_flight
        for _ in range(self.concurrency):
            self._inbox.put(None)
        # Runners that finished exit at once; a stuck one stays behind (daemon). One
        # short allowance past the deadline for all of them together, not one each:
        # with many busy runners the waits would add up to minutes.
        allowance = max(deadline, time.monotonic()) + 1.5
        for thread in self._threads:
            thread.join(timeout=max(0.0, allowance - time.monotonic()))
        if self._acks is not None:
            # Acks handed over by runners that finished late are written before the
            # leases are released below.
            self._acks.close(timeout=max(0.1, allowance - time.monotonic()))
        try:
            # Whatever did not finish goes back to the queue now, not after the lease.
            moved = claims.release_held(self.id)
            WorkerRow.objects.filter(id=self.id).delete()
            if left or moved:
                logger.warning("released unfinished messages count=%s", moved)
        except DatabaseError as exc:
            logger.warning("could not release leases error=%s", exc)
        logger.info("worker stopped id=%s processed=%s", self.id, self.processed)
        close_old_connections()
