"""`manage.py hotmesh_reseal`: rewrite stored values through the current codec."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from hotmesh_django.codecs import active_codec
from hotmesh_django.engine.reseal import describe, reseal
from hotmesh_django.management.commands.hotmesh_worker import positive_int


class Command(BaseCommand):
    help = (
        "Rewrite every stored argument, result, error, payload, state and journal entry "
        "with the current HOTMESH_CODEC and the first of HOTMESH_CODEC_KEYS: seals values "
        "written before the codec was on, and re-encrypts values sealed with older keys "
        "so those keys can be dropped. Safe to run while workers run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--plain",
            action="store_true",
            help="Write the values back unsealed instead, before turning the codec off.",
        )
        parser.add_argument(
            "--batch-size",
            type=positive_int,
            default=500,
            help="Rows read and rewritten per transaction (default 500).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be rewritten; write nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if active_codec() is None:
            raise CommandError(
                "HOTMESH_CODEC is not set: there is nothing to seal with or to unseal by. "
                "Set it (and its keys) as the workers have it."
            )
        dry_run = options["dry_run"]
        counts = reseal(
            plain=options["plain"],
            batch_size=options["batch_size"],
            dry_run=dry_run,
            progress=lambda count: self.stdout.write(describe(count, dry_run=dry_run)),
        )
        unreadable = sum(c.unreadable for c in counts)
        if unreadable:
            raise CommandError(
                f"{unreadable} values could not be unsealed and were left as they are: add "
                "the key they were sealed with to HOTMESH_CODEC_KEYS and run again."
            )
