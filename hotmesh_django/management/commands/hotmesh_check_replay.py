"""`manage.py hotmesh_check_replay`: replay recorded jobs against the current code."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from hotmesh_django.choices import JobStatus
from hotmesh_django.engine.replay_check import PROBLEMS, check_jobs, select_jobs
from hotmesh_django.management.commands.hotmesh_prune import duration
from hotmesh_django.management.commands.hotmesh_worker import positive_int


def job_status(value: str) -> str:
    """Parse a job status, case-insensitively."""
    status = value.strip().upper()
    if status not in JobStatus.values:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a job status; choose from {', '.join(JobStatus.values)}"
        )
    return status


class Command(BaseCommand):
    help = (
        "Replay the journals of running and recent workflow jobs against the current "
        "code, writing nothing, and report every job whose replay no longer matches "
        "its journal or whose code is missing. Exit code 1 when any is found."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since",
            type=duration,
            default="7d",
            metavar="DURATION",
            help="Also check jobs finished within this age, e.g. 12h, 7d (default 7d). "
            "Active jobs are always checked.",
        )
        parser.add_argument(
            "--status",
            dest="statuses",
            type=job_status,
            action="append",
            default=None,
            metavar="STATUS",
            help="Only jobs in this status (repeatable).",
        )
        parser.add_argument(
            "--name",
            dest="names",
            action="append",
            default=None,
            metavar="WORKFLOW",
            help="Only jobs of this workflow (repeatable).",
        )
        parser.add_argument(
            "--limit",
            type=positive_int,
            default=None,
            help="Check at most this many jobs (oldest first).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        since = options["since"]
        if isinstance(since, str):  # argparse does not run type= on defaults of call_command
            since = duration(since)
        jobs = select_jobs(since=since, statuses=options["statuses"], names=options["names"])
        if options["limit"]:
            jobs = jobs[: options["limit"]]
        counts: dict[str, int] = {}
        for result in check_jobs(jobs.iterator()):
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
            line = f"{result.outcome.upper()} {result.workflow_id} {result.name} [{result.status}]"
            if result.outcome in PROBLEMS:
                self.stdout.write(self.style.ERROR(f"{line}: {result.detail}"))
            elif options["verbosity"] >= 2:
                self.stdout.write(f"{line}: {result.detail}")
        total = sum(counts.values())
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none"
        problems = sum(n for k, n in counts.items() if k in PROBLEMS)
        message = f"Replayed {total} job{'s' if total != 1 else ''}: {summary}."
        if problems:
            raise CommandError(message, returncode=1)
        self.stdout.write(self.style.SUCCESS(message))
