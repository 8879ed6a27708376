"""`manage.py hotmesh_ctl pause|resume|status [QUEUE]`: control queues cluster-wide."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from hotmesh_django.engine import queues


class Command(BaseCommand):
    help = "Pause or resume a queue on every worker, or show the queues' state."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="pause|resume|status")
        for action, text in (("pause", "stop claiming from QUEUE"), ("resume", "claim again")):
            cmd = sub.add_parser(action, help=text)
            cmd.add_argument("queue", metavar="QUEUE")
            cmd.add_argument("--force", action="store_true", help="act on a queue nothing uses yet")
        sub.add_parser("status", help="list queues with their paused state and depth")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "status":
            paused = queues.paused_queues()
            for name in sorted(queues.known_queues()):
                depth = queues.depth(name)
                counts = " ".join(f"{k.lower()}={v}" for k, v in sorted(depth.items()))
                state = "paused" if name in paused else "active"
                self.stdout.write(f"{name}\t{state}\t{counts or 'empty'}")
            return
        queue = options["queue"]
        try:
            changed = queues.set_paused(queue, action == "pause", force=options["force"])
        except queues.UnknownQueue as exc:
            raise CommandError(f"{exc} Use --force to {action} it anyway.") from exc
        verb = "paused" if action == "pause" else "resumed"
        if changed:
            self.stdout.write(self.style.SUCCESS(f"Queue {queue!r} {verb} on every worker."))
        else:
            self.stdout.write(f"Queue {queue!r} was already {verb}; nothing changed.")
