"""`manage.py hotmesh_ctl pause|resume|status [QUEUE]`: control queues cluster-wide."""

from __future__ import annotations

import getpass
from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from hotmesh_django.engine import queues
from hotmesh_django.models import Queue


class Command(BaseCommand):
    help = "Pause or resume a queue on every worker, or show the queues' state."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="pause|resume|status")
        for action, text in (("pause", "stop claiming from QUEUE"), ("resume", "claim again")):
            cmd = sub.add_parser(action, help=text)
            cmd.add_argument("queue", metavar="QUEUE", help=f"the queue to {action}")
            cmd.add_argument("--force", action="store_true", help="act on a queue nothing uses yet")
            cmd.add_argument(
                "--user",
                metavar="USERNAME",
                help="the Django user to record in the admin's history (as the admin does)",
            )
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
        user = _user(options["user"])
        # Who did it: the Django user when named, else the operating-system account.
        actor = user.get_username() if user is not None else f"os:{_os_user()}"
        try:
            changed = queues.set_paused(
                queue, action == "pause", force=options["force"], actor=actor
            )
        except queues.UnknownQueue as exc:
            raise CommandError(f"{exc} Use --force to {action} it anyway.") from exc
        except ValueError as exc:
            raise CommandError(f"QUEUE {queue!r}: {exc}") from exc
        verb = "paused" if action == "pause" else "resumed"
        if changed and user is not None:
            _log_change(user, queue, "Paused." if action == "pause" else "Resumed.")
        if changed:
            self.stdout.write(self.style.SUCCESS(f"Queue {queue!r} {verb} on every worker."))
        else:
            self.stdout.write(f"Queue {queue!r} was already {verb}; nothing changed.")


def _user(username: str | None) -> Any:
    if username is None:
        return None
    if not apps.is_installed("django.contrib.admin"):
        raise CommandError(
            "--user records the change in the admin's history, which needs "
            "django.contrib.admin in INSTALLED_APPS."
        )
    model = get_user_model()
    try:
        return model._default_manager.get_by_natural_key(username)
    except model.DoesNotExist:
        raise CommandError(f"No user is named {username!r}.") from None


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return "unknown"


def _log_change(user: Any, queue: str, message: str) -> None:
    """Record the change where the admin's own pause/resume records it."""
    from django.contrib.admin.models import CHANGE, LogEntry

    LogEntry.objects.log_actions(
        user.pk, Queue.objects.filter(name=queue), CHANGE, message, single_object=True
    )
