"""`manage.py hotmesh_worker`: run workers that claim and run durable work."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError
from django.db.models import Count, Min
from django.utils import timezone

from hotmesh_django import registry
from hotmesh_django.conf import IMPORT_ERRORS, settings
from hotmesh_django.models import Job, Stream, StreamStatus
from hotmesh_django.pool import install_signal_handlers, run_pool
from hotmesh_django.worker import Worker

logger = logging.getLogger("hotmesh_django.worker")


# Each runner thread holds a database session of its own, so a process with
# thousands of them fails on max_connections (or on starting the threads) instead.
MAX_CONCURRENCY = 512
MAX_PROCESSES = 128
# threading's waits refuse timeouts beyond about 292 years (OverflowError).
MAX_GRACEFUL_SECONDS = 7 * 86400


def bounded_int(highest: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer of at least 1 (and at most `highest`)."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if highest is None and number < 1:
            raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
        if highest is not None and not 1 <= number <= highest:
            raise argparse.ArgumentTypeError(f"must be from 1 to {highest}, not {number}")
        return number

    return parse


positive_int = bounded_int()


def non_negative_seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 <= number <= MAX_GRACEFUL_SECONDS:
        raise argparse.ArgumentTypeError(
            f"must be from 0 to {MAX_GRACEFUL_SECONDS} seconds (a week), not {value}"
        )
    return number


def queue_list(value: str) -> list[str]:
    queues = [q.strip() for q in value.split(",") if q.strip()]
    if not queues:
        raise argparse.ArgumentTypeError("give at least one queue name, e.g. default,emails")
    for queue in queues:
        if len(queue) > 100:
            raise argparse.ArgumentTypeError(f"queue name too long (max 100): {queue[:20]}...")
    return queues


def _run_worker(**kwargs: Any) -> None:
    worker = Worker(**kwargs)
    # A second signal exits at once; the unfinished leases expire and are rescued.
    install_signal_handlers(worker.stop, lambda: None)
    worker.run()


class Command(BaseCommand):
    help = "Run hotmesh workers: claim messages from queues and run activities and workflows."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--queues",
            type=queue_list,
            default=None,
            help="Comma-separated queues to work (default: all).",
        )
        parser.add_argument(
            "--concurrency",
            type=bounded_int(MAX_CONCURRENCY),
            default=4,
            help="Runner threads per process (default 4).",
        )
        parser.add_argument(
            "--processes",
            type=bounded_int(MAX_PROCESSES),
            default=1,
            help="Worker processes (default 1).",
        )
        parser.add_argument("--burst", action="store_true", help="Exit once the queues are empty.")
        parser.add_argument(
            "--import",
            dest="imports",
            action="append",
            default=[],
            metavar="MODULE",
            help="Module to import (repeatable).",
        )
        parser.add_argument(
            "--graceful-timeout",
            type=non_negative_seconds,
            default=30.0,
            help="Seconds to let in-flight work finish on SIGTERM (default 30).",
        )

        parser.add_argument(
            "--poll-only",
            action="store_true",
            help="Do not LISTEN for wake-ups; poll every HOTMESH_POLL_INTERVAL_SECONDS "
            "(for PgBouncer in transaction mode; same as HOTMESH_LISTEN = False).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        for module in [*settings.imports, *options["imports"]]:
            try:
                importlib.import_module(module)
            except IMPORT_ERRORS as exc:
                raise CommandError(
                    f"Cannot import {module!r}: {type(exc).__name__}: {exc}"
                ) from exc
        kwargs = {
            "queues": options["queues"],
            "concurrency": options["concurrency"],
            "burst": options["burst"],
            "graceful_timeout": options["graceful_timeout"],
            "listen": False if options["poll_only"] else None,
        }
        # On stdout whatever LOGGING says (Django's default drops the engine's INFO
        # lines), so whoever started the worker sees that it runs and when it stops.
        queues = ",".join(options["queues"]) if options["queues"] else "all"
        self.stdout.write(
            f"hotmesh worker pid={os.getpid()}: queues={queues}, "
            f"{options['processes']} process(es) x {options['concurrency']} thread(s)"
            f"{', burst' if options['burst'] else ''}. SIGTERM or Ctrl-C stops it "
            f"gracefully (within {options['graceful_timeout']:g} s), a second one at once."
        )
        if options["queues"]:
            self._warn_of_unknown_queues(options["queues"])
        self.stdout.flush()
        if options["processes"] == 1:
            _run_worker(**kwargs)
        else:
            code = run_pool(options["processes"], _run_worker, kwargs)
            if code:
                raise CommandError("a worker process failed", returncode=code)
        self.stdout.write(f"hotmesh worker pid={os.getpid()} stopped.")
        if options["burst"]:
            self._say_what_is_scheduled(options["queues"])

    def _warn_of_unknown_queues(self, queues: list[str]) -> None:
        """Warn of a queue nothing here knows (a typo in --queues would otherwise
        leave a worker idle without a word). Only a warning: work for it may come
        from code this process does not import."""
        known = registry.queues() | set(settings.queues)
        unknown = [q for q in queues if q not in known]
        if not unknown:
            return
        with contextlib.suppress(DatabaseError):  # the worker says so itself, later
            used = set(Job.objects.filter(queue__in=unknown).values_list("queue", flat=True))
            used |= set(Stream.objects.filter(queue__in=unknown).values_list("queue", flat=True))
            unknown = [q for q in unknown if q not in used]
        for queue in unknown:
            self.stderr.write(
                f"warning: no activity or workflow imported here uses queue {queue!r}, "
                "HOTMESH_QUEUES does not name it and no job has used it: is it a typo?"
            )

    def _say_what_is_scheduled(self, queues: list[str] | None) -> None:
        """A burst ends when nothing is ready: say what waits for a later run (timers,
        delayed starts, retry back-offs), so that nothing seems silently lost."""
        scheduled = Stream.objects.filter(status=StreamStatus.SCHEDULED)
        if queues:
            scheduled = scheduled.filter(queue__in=queues)
        try:
            left = scheduled.aggregate(n=Count("id"), due=Min("visible_at"))
        except DatabaseError as exc:
            self.stderr.write(f"could not count the scheduled messages left: {exc}".strip())
            return
        if left["n"]:
            seconds = max(0.0, (left["due"] - timezone.now()).total_seconds())
            self.stdout.write(
                f"{left['n']} scheduled message(s) left (timers, delayed starts, retry "
                f"back-offs); the next is due in {seconds:.1f} s."
            )
