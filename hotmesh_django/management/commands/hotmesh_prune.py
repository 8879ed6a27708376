"""`manage.py hotmesh_prune`: delete finished jobs older than a given age."""

from __future__ import annotations

import argparse
import datetime
import re
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from hotmesh_django.choices import FINISHED_STATUSES
from hotmesh_django.engine.prune import DEFAULT_STATUSES, prune
from hotmesh_django.management.commands.hotmesh_worker import positive_int

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"(?P<number>[+-]?\d+(?:\.\d+)?)\s*(?P<unit>[smhdw])", re.IGNORECASE)


def duration(value: str) -> datetime.timedelta:
    """Parse a duration such as 30s, 15m, 12h, 7d or 2w (a number and one unit)."""
    match = _DURATION.fullmatch(value.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a duration; give a number and a unit (s, m, h, d, w), e.g. 7d"
        )
    number = float(match["number"])
    if number < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
    try:
        return datetime.timedelta(**{_UNITS[match["unit"].lower()]: number})
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{value!r} is too long a duration") from None


def finished_status(value: str) -> str:
    """Parse a finished job status, case-insensitively."""
    status = value.strip().upper()
    if status not in FINISHED_STATUSES:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a finished status; choose from {', '.join(FINISHED_STATUSES)}"
        )
    return status


class Command(BaseCommand):
    help = (
        "Delete finished jobs (with their steps, journal, signals and messages) that "
        "finished longer ago than --older-than, in short batches."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=duration,
            required=True,
            metavar="DURATION",
            help="Age of the finished jobs to delete, e.g. 30s, 15m, 12h, 7d, 2w.",
        )
        parser.add_argument(
            "--status",
            dest="statuses",
            type=finished_status,
            action="append",
            default=None,
            metavar="STATUS",
            help=f"Only jobs in this status (repeatable; default: {', '.join(DEFAULT_STATUSES)}).",
        )
        parser.add_argument(
            "--batch-size",
            type=positive_int,
            default=1000,
            help="Jobs deleted per transaction (default 1000).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be deleted; delete nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        statuses = options["statuses"] or list(DEFAULT_STATUSES)
        older_than: datetime.timedelta = options["older_than"]
        count = prune(
            older_than,
            statuses=statuses,
            batch_size=options["batch_size"],
            dry_run=options["dry_run"],
        )
        what = "job" if count == 1 else "jobs"
        which = ", ".join(dict.fromkeys(statuses))
        if options["dry_run"]:
            self.stdout.write(
                f"Would delete {count} {what} ({which}) finished more than {older_than} ago."
            )
        else:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Deleted {count} {what} ({which}) finished more than {older_than} ago."
                )
            )
