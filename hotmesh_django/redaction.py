"""Hide secrets where people look: the admin and the worker's log lines.

Values under dict keys that match HOTMESH_REDACT_KEYS (regular expressions, searched
case-insensitively, so "token" also hides "access_token") are shown as MASK. Stored
data is never changed: the workflow still gets the real value.

Free text (error messages, tracebacks, log lines) is masked on a best-effort basis
where it reads like `key=value` or `"key": "value"`; a secret in prose with no key
next to it cannot be recognised.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

from hotmesh_django.conf import settings

__all__ = ["MASK", "RedactingFilter", "get_logger", "redact", "redact_text"]

MASK = "********"

# A key, a separator, a value: `password=x`, `'token': 'x'`, `"api_key": "x"`,
# `Authorization: Bearer x`. Unquoted values stop at a space, a delimiter or a
# bracket, so `"password": {...}` in text is left to the structured `redact`.
_PAIR = re.compile(
    r"""(?P<key>(?P<q>["']?)[A-Za-z_][\w.-]*(?P=q))(?P<sep>\s*[:=]\s*)"""
    r"""(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'"""
    r"""|(?:(?:bearer|basic|token|digest)\s+)?[^\s,;&(){}\[\]"']+)""",
    re.IGNORECASE,
)


@functools.cache
def _compile(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


def _matcher() -> re.Pattern[str] | None:
    keys = settings.redact_keys
    try:
        if isinstance(keys, str | bytes) or not all(isinstance(k, str) for k in keys):
            raise TypeError(keys)
        return _compile(tuple(keys))
    except (re.error, TypeError):
        # A bad setting (reported by check hotmesh.E025) hides everything rather
        # than nothing: the safe side for a redaction that cannot be understood.
        return _EVERYTHING


_EVERYTHING = re.compile("")


def is_secret(key: str) -> bool:
    """True when values under `key` are to be hidden."""
    matcher = _matcher()
    return matcher is not None and matcher.search(key) is not None


def redact(data: Any) -> Any:
    """Return a copy of JSON `data` with the values under secret keys masked.

    Strings elsewhere are passed through `redact_text`, so an error message quoting
    a dict with a password is masked too.
    """
    matcher = _matcher()
    if matcher is None:
        return data
    return _redact(data, matcher)


def _redact(data: Any, matcher: re.Pattern[str]) -> Any:
    if isinstance(data, dict):
        return {
            key: MASK if matcher.search(str(key)) else _redact(value, matcher)
            for key, value in data.items()
        }
    if isinstance(data, list):
        return [_redact(item, matcher) for item in data]
    if isinstance(data, str):
        return _redact_text(data, matcher)
    return data


def redact_text(text: str) -> str:
    """Mask the values of `key=value`-like pairs in free text whose key is secret."""
    matcher = _matcher()
    if matcher is None or not text:
        return text
    return _redact_text(text, matcher)


def _redact_text(text: str, matcher: re.Pattern[str]) -> str:
    def mask(match: re.Match[str]) -> str:
        key = match.group("key").strip("\"'")
        if not matcher.search(key):
            return match.group(0)
        value = match.group("value")
        quote = value[0] if value[:1] in ("'", '"') else ""
        return f"{match.group('key')}{match.group('sep')}{quote}{MASK}{quote}"

    return _PAIR.sub(mask, text)


class RedactingFilter(logging.Filter):
    """Mask secrets in a record's message and exception text before any handler
    formats it. Attached to the engine's loggers by `get_logger`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            if _matcher() is None:
                return True
            message = record.getMessage()
            masked = redact_text(message)
            if masked != message:
                record.msg, record.args = masked, None
            if record.exc_info and not record.exc_text:
                # Formatters reuse exc_text when it is set, so they print this one.
                text = logging.Formatter().formatException(record.exc_info)
                record.exc_text = redact_text(text)
        except Exception:  # noqa: BLE001, S110 - a log call must never raise
            pass
        return True


_FILTER = RedactingFilter()


def get_logger(name: str) -> logging.Logger:
    """Return the logger `name` with the redacting filter attached.

    A logger's filters see only records logged on that logger, not those of its
    children, so each module that may log user values takes its logger from here.
    """
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger
