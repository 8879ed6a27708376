"""Typed access to the HOTMESH_* settings, with their defaults in one place."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    # How long a claimed item is held before another worker may re-run it.
    "HOTMESH_LEASE_SECONDS": 30.0,
    # How often a worker proves it is alive and extends its leases.
    "HOTMESH_HEARTBEAT_SECONDS": 5.0,
    # The polling floor under LISTEN/NOTIFY wake-ups.
    "HOTMESH_POLL_INTERVAL_SECONDS": 1.0,
    # Wake workers and handle.result() with LISTEN/NOTIFY. Turn off behind PgBouncer in
    # transaction mode, where a LISTEN does not stay on one server session: then
    # everything polls every HOTMESH_POLL_INTERVAL_SECONDS.
    "HOTMESH_LISTEN": True,
    # Modules every worker imports besides activities.py/workflows.py autodiscovery.
    "HOTMESH_IMPORTS": [],
    # Largest serialized argument, result or signal payload, in bytes.
    "HOTMESH_MAX_PAYLOAD_BYTES": 1_048_576,
    # Per-queue options, e.g. {"emails": {"concurrency": 2, "rate": "100/m"}}.
    "HOTMESH_QUEUES": {},
    # Delete finished jobs this long after they finish (None: keep them).
    "HOTMESH_PRUNE_AFTER_SECONDS": None,
    # Dotted paths of middleware classes wrapping starts, activities and turns,
    # outermost first (like Django's MIDDLEWARE).
    "HOTMESH_MIDDLEWARE": [],
    # Dotted path to the codec every stored value passes through (None: plain JSON),
    # e.g. "hotmesh_django.codecs.FernetCodec".
    "HOTMESH_CODEC": None,
    # FernetCodec's keys: the first encrypts, all decrypt.
    "HOTMESH_CODEC_KEYS": None,
    # Regular expressions (searched, case-insensitive) for dict keys whose values the
    # admin and the worker's log lines show as "********". [] turns it off.
    "HOTMESH_REDACT_KEYS": [
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "api[-_]?key",
        "private[-_]?key",
        "authorization",
        "cookie",
        "credential",
    ],
}


# What importlib.import_module() can raise for a module that cannot be imported:
# ImportError, ValueError or TypeError for an empty or relative name ("", ".x"), and
# whatever the module's own code raises (a SyntaxError, a RuntimeError at import).
IMPORT_ERRORS = (Exception,)


def is_module_list(value: object) -> bool:
    """Whether `value` is what HOTMESH_IMPORTS must be: a list of module paths."""
    return isinstance(value, list | tuple) and all(isinstance(m, str) for m in value)


class Settings:
    """The HOTMESH_* settings, read once and again after any of them changes.

    The hot path reads several per step; a setting left at its default costs Django a
    failed lookup each time. override_settings (and pytest-django's `settings`) send
    `setting_changed`, which empties the cache.
    """

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def _get(self, name: str) -> Any:
        try:
            return self._cache[name]
        except KeyError:
            value = self._cache[name] = getattr(django_settings, name, DEFAULTS[name])
            return value

    def clear(self) -> None:
        """Forget what was read (a setting changed)."""
        self._cache.clear()

    @property
    def lease_seconds(self) -> float:
        return float(self._get("HOTMESH_LEASE_SECONDS"))

    @property
    def heartbeat_seconds(self) -> float:
        return float(self._get("HOTMESH_HEARTBEAT_SECONDS"))

    @property
    def poll_interval_seconds(self) -> float:
        return float(self._get("HOTMESH_POLL_INTERVAL_SECONDS"))

    @property
    def listen(self) -> bool:
        return bool(self._get("HOTMESH_LISTEN"))

    @property
    def imports(self) -> list[str]:
        value = self._get("HOTMESH_IMPORTS")
        # A malformed value (a bare string, None) is hotmesh.E005's to report; read
        # as a list it would import one module per character, or crash app loading.
        if not is_module_list(value):
            return []
        return list(value)

    @property
    def max_payload_bytes(self) -> int:
        return int(self._get("HOTMESH_MAX_PAYLOAD_BYTES"))

    @property
    def queues(self) -> dict[str, dict[str, Any]]:
        return dict(self._get("HOTMESH_QUEUES"))

    @property
    def middleware(self) -> Sequence[str]:
        # Not coerced: a bare string must reach the hotmesh.E030 check, not become
        # a list of one-letter paths.
        value: Sequence[str] = self._get("HOTMESH_MIDDLEWARE")
        return value

    @property
    def codec(self) -> Any:
        # Not coerced: codecs.active_codec() says what is wrong with a bad value.
        return self._get("HOTMESH_CODEC")

    @property
    def redact_keys(self) -> Any:
        # Checked by hotmesh.E025; redaction treats a malformed value as "hide all".
        return self._get("HOTMESH_REDACT_KEYS") or []


settings = Settings()


@receiver(setting_changed)
def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("HOTMESH_"):
        settings.clear()
