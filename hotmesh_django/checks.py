"""System checks: mistakes in setup surface at startup with an id and a hint."""

from __future__ import annotations

import importlib
import json
import re
from typing import Any

from django.conf import settings as django_settings
from django.core.checks import CheckMessage, Error, Tags, register
from django.core.checks import Warning as CheckWarning
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections, transaction
from django.utils.module_loading import import_string

from hotmesh_django import registry
from hotmesh_django.codecs import FernetCodec, active_codec, fernet_key_problems
from hotmesh_django.conf import DEFAULTS, IMPORT_ERRORS, is_module_list
from hotmesh_django.engine.schedules import validate_schedule
from hotmesh_django.models import Schedule

# Seconds, with the range a worker can run with. Below it a worker spins (a heartbeat
# of a microsecond is a thousand commits a second); above it the database's
# timestamps or the platform's timers overflow (a lease of 1e15 s, a poll of 1e300 s).
_DAY = 86_400
_SECONDS = {
    "HOTMESH_LEASE_SECONDS": ("hotmesh.E002", 0.1, 7 * _DAY),
    "HOTMESH_HEARTBEAT_SECONDS": ("hotmesh.E003", 0.05, _DAY),
    "HOTMESH_POLL_INTERVAL_SECONDS": ("hotmesh.E004", 0.01, _DAY),
}


# Not tagged "database": it reads settings only, and database-tagged checks are
# skipped unless `check --database` is asked for (Django 6.1).
@register(Tags.compatibility)
def check_database(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """hotmesh.E001: the default database must be PostgreSQL."""
    engine = connections["default"].settings_dict.get("ENGINE", "")
    if connections["default"].vendor != "postgresql":
        return [
            Error(
                f"hotmesh_django needs PostgreSQL, but the default database uses {engine!r}.",
                hint="Set DATABASES['default']['ENGINE'] to 'django.db.backends.postgresql' "
                "(or DATABASE_URL=postgres://...).",
                id="hotmesh.E001",
            )
        ]
    return []


def _number(name: str) -> Any:
    return getattr(django_settings, name, DEFAULTS[name])


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """hotmesh.E002-E008: HOTMESH_* settings have the right types and ranges."""
    errors: list[CheckMessage] = []
    for name, (check_id, low, high) in _SECONDS.items():
        value = _number(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            problem = f"{name} must be a number of seconds, not {value!r}."
        elif not low <= value <= high:  # also refuses nan and inf
            problem = f"{name} must be from {low:g} to {high:g} seconds, not {value!r}."
        else:
            continue
        errors.append(Error(problem, hint=f"For example {name} = {DEFAULTS[name]}.", id=check_id))
    lease, beat = _number("HOTMESH_LEASE_SECONDS"), _number("HOTMESH_HEARTBEAT_SECONDS")
    if not errors and beat >= lease:
        errors.append(
            Error(
                f"HOTMESH_HEARTBEAT_SECONDS ({beat}) must be shorter than "
                f"HOTMESH_LEASE_SECONDS ({lease}), or leases expire between heartbeats.",
                hint="Keep the heartbeat at a third of the lease or less.",
                id="hotmesh.E006",
            )
        )
    imports = _number("HOTMESH_IMPORTS")
    if not is_module_list(imports):
        errors.append(
            Error(
                f"HOTMESH_IMPORTS must be a list of module paths, not {imports!r}.",
                hint='For example HOTMESH_IMPORTS = ["shop.tasks"].',
                id="hotmesh.E005",
            )
        )
    else:
        for module in imports:
            try:
                importlib.import_module(module)
            except IMPORT_ERRORS as exc:
                errors.append(
                    Error(
                        f"HOTMESH_IMPORTS names {module!r}, which cannot be imported: "
                        f"{type(exc).__name__}: {exc}.",
                        hint="Fix the module path or remove it.",
                        id="hotmesh.E005",
                    )
                )
    from hotmesh_django.engine.prune import prune_after_seconds

    try:
        prune_after_seconds()
    except ValueError as exc:
        errors.append(
            Error(
                str(exc),
                hint="For example HOTMESH_PRUNE_AFTER_SECONDS = 7 * 86400, or None for off.",
                id="hotmesh.E009",
            )
        )
    size = _number("HOTMESH_MAX_PAYLOAD_BYTES")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        errors.append(
            Error(
                f"HOTMESH_MAX_PAYLOAD_BYTES must be a positive integer, not {size!r}.",
                hint="For example HOTMESH_MAX_PAYLOAD_BYTES = 1_048_576 (1 MiB).",
                id="hotmesh.E007",
            )
        )
    listen = _number("HOTMESH_LISTEN")
    if not isinstance(listen, bool):
        errors.append(
            Error(
                f"HOTMESH_LISTEN must be True or False, not {listen!r}.",
                hint="False makes workers and handle.result() poll (PgBouncer in "
                "transaction mode); True wakes them with LISTEN/NOTIFY.",
                id="hotmesh.E011",
            )
        )
    queues = _number("HOTMESH_QUEUES")
    if not isinstance(queues, dict):
        errors.append(
            Error(
                f"HOTMESH_QUEUES must map queue names to option dicts, not {queues!r}.",
                hint='For example HOTMESH_QUEUES = {"emails": {"concurrency": 2}}.',
                id="hotmesh.E008",
            )
        )
    else:
        from hotmesh_django.engine.queues import validate_queue_options

        for name, options in queues.items():
            errors.extend(
                Error(
                    problem,
                    hint='For example {"emails": {"concurrency": 2, "rate": "100/m"}}.',
                    id="hotmesh.E008",
                )
                for problem in validate_queue_options(name, options)
            )
    return errors


@register()
def check_schedules(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """hotmesh.E010: every schedule declared in code has a valid cron expression and
    timezone (the decorator refuses them too; this catches one made by hand)."""
    return [
        Error(
            f"@workflow {d.name!r}: {problem}",
            hint="Fix the decorator; a schedule that does not parse never fires.",
            id="hotmesh.E010",
        )
        for d in registry.workflows().values()
        if d.schedule is not None
        for problem in _schedule_problems(d.schedule, d.timezone)
    ]


@register(Tags.database)
def check_schedule_rows(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """hotmesh.W010: every Schedule row has a valid cron expression and timezone.

    Tagged `database`, so it reads the table only when the caller asks for database
    checks (`check --database`, migrate). A bad row is data, not configuration: it
    warns and never stops a command (an error would stop the very migrate or worker
    that ships the fix); workers skip such a row and log it.
    """
    warnings: list[CheckMessage] = []
    for alias in databases or ():
        try:
            with transaction.atomic(using=alias):
                rows = list(Schedule.objects.using(alias).values_list("name", "cron", "timezone"))
        except DatabaseError:
            continue  # not migrated yet
        warnings += [
            CheckWarning(
                f"Schedule {name!r}: {problem}",
                hint="Fix or disable it in the admin; until then it never fires.",
                id="hotmesh.W010",
            )
            for name, cron, tz in rows
            for problem in _schedule_problems(cron, tz)
        ]
    return warnings


def _schedule_problems(cron: Any, tz: Any) -> list[str]:
    try:
        validate_schedule(cron, tz)
    except ValueError as exc:
        return [str(exc)]
    return []


@register()
def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """hotmesh.E030-E034: HOTMESH_MIDDLEWARE lists importable Middleware subclasses."""
    from hotmesh_django.middleware import MiddlewareError, middleware_class

    paths = _number("HOTMESH_MIDDLEWARE")
    hint = (
        'For example HOTMESH_MIDDLEWARE = ["shop.middleware.TenantMiddleware"], naming '
        "a subclass of hotmesh_django.middleware.Middleware."
    )
    if not isinstance(paths, list | tuple):
        return [
            Error(
                f"HOTMESH_MIDDLEWARE must be a list of dotted paths, not {paths!r}.",
                hint=hint,
                id="hotmesh.E030",
            )
        ]
    errors: list[CheckMessage] = []
    for path in paths:
        try:
            middleware_class(path)
        except MiddlewareError as exc:
            errors.append(Error(str(exc), hint=hint, id=exc.check_id))
    return errors


_KEY_HINT = (
    "Make a key with: python -c 'from cryptography.fernet import Fernet; "
    "print(Fernet.generate_key().decode())', keep it out of the code (e.g. "
    'HOTMESH_CODEC_KEYS = env.list("HOTMESH_CODEC_KEYS")) and list new keys first.'
)


@register()
def check_codec(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """hotmesh.E020-E025: HOTMESH_CODEC names a working codec, with good keys."""
    path = getattr(django_settings, "HOTMESH_CODEC", None)
    if path is None:
        return []
    hint = 'For example HOTMESH_CODEC = "hotmesh_django.codecs.FernetCodec", or None for off.'
    if not isinstance(path, str) or not path:
        return [
            Error(
                f"HOTMESH_CODEC must be a dotted path, not {path!r}.", hint=hint, id="hotmesh.E020"
            )
        ]
    try:
        found = import_string(path)
    except ImportError as exc:
        return [
            Error(
                f"HOTMESH_CODEC names {path!r}, which cannot be imported: {exc}",
                hint=hint,
                id="hotmesh.E020",
            )
        ]
    if isinstance(found, type) and issubclass(found, FernetCodec):
        keys = getattr(django_settings, "HOTMESH_CODEC_KEYS", None)
        if keys is None or (isinstance(keys, list | tuple) and not keys):
            return [
                Error(
                    "HOTMESH_CODEC is FernetCodec but HOTMESH_CODEC_KEYS is not set.",
                    hint=_KEY_HINT,
                    id="hotmesh.E022",
                )
            ]
        problems = fernet_key_problems(keys)
        if problems:
            return [Error(problem, hint=_KEY_HINT, id="hotmesh.E023") for problem in problems]
    try:
        codec = active_codec()
    except ImproperlyConfigured as exc:
        return [
            Error(
                str(exc),
                hint="encode() and decode() must take and return JSON data.",
                id="hotmesh.E021",
            )
        ]
    except Exception as exc:  # noqa: BLE001 - the codec's own constructor failed
        return [
            Error(
                f"HOTMESH_CODEC {path!r} could not be made: {type(exc).__name__}: {exc}",
                hint="A class is called with no arguments; name an object to configure it.",
                id="hotmesh.E021",
            )
        ]
    return _check_round_trip(path, codec)


def _check_round_trip(path: str, codec: Any) -> list[CheckMessage]:
    """hotmesh.E024: the codec gives back what it was given, as JSON."""
    probe = {"s": "hotmesh ✓", "n": [1, 2.5, None, True], "o": {"k": "v"}}
    try:
        sealed = codec.encode(probe)
        json.dumps(sealed)  # it must be storable in a jsonb column
        opened = codec.decode(json.loads(json.dumps(sealed)))
    except Exception as exc:  # noqa: BLE001 - any failure of user code is the finding
        return [
            Error(
                f"HOTMESH_CODEC {path!r} failed a round trip: {type(exc).__name__}: {exc}",
                hint="encode() must return JSON data and decode() must reverse it.",
                id="hotmesh.E024",
            )
        ]
    if opened != probe:
        return [
            Error(
                f"HOTMESH_CODEC {path!r} does not give back what it encoded.",
                hint="decode(encode(data)) must equal data for any JSON value.",
                id="hotmesh.E024",
            )
        ]
    return []


@register()
def check_redaction(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """hotmesh.E025: HOTMESH_REDACT_KEYS is a list of regular expressions."""
    keys = getattr(django_settings, "HOTMESH_REDACT_KEYS", DEFAULTS["HOTMESH_REDACT_KEYS"])
    hint = 'For example HOTMESH_REDACT_KEYS = ["password", "token", "^pin$"], or [] for off.'
    if keys is None:
        return []
    if isinstance(keys, str | bytes) or not isinstance(keys, list | tuple):
        return [
            Error(
                f"HOTMESH_REDACT_KEYS must be a list of key names or regular expressions, "
                f"not {type(keys).__name__}.",
                hint=hint,
                id="hotmesh.E025",
            )
        ]
    errors: list[CheckMessage] = []
    for i, pattern in enumerate(keys):
        if not isinstance(pattern, str) or not pattern:
            problem = f"HOTMESH_REDACT_KEYS[{i}] must be a non-empty string, not {pattern!r}."
        else:
            try:
                re.compile(pattern)
                continue
            except re.error as exc:
                problem = (
                    f"HOTMESH_REDACT_KEYS[{i}] {pattern!r} is not a regular expression: {exc}."
                )
        errors.append(Error(problem, hint=hint, id="hotmesh.E025"))
    return errors
