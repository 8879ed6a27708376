"""Durations as callers pass them: a number of seconds or a timedelta."""

from __future__ import annotations

import datetime
import math

# Longer than any sensible wait, and well inside what both datetime.timedelta and a
# Postgres interval hold: NaN, infinity or 1e300 seconds would otherwise pass here and
# fail later, as an OverflowError in a worker or a DataError that aborts the caller's
# transaction.
MAX_SECONDS = 100 * 365 * 86400


def to_seconds(value: float | datetime.timedelta, what: str) -> float:
    """`value` in seconds, or ValueError/TypeError naming `what` and what is wrong."""
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str | bytes | bool):
        # float() would take "30" and True: durations are numbers of seconds (or
        # timedeltas), and a string or flag here is a mistake, not a duration.
        raise TypeError(
            f"{what} must be a number of seconds or a timedelta, not {type(value).__name__}."
        )
    else:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"{what} must be a number of seconds or a timedelta, not {type(value).__name__}."
            ) from None
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_SECONDS:
        raise ValueError(
            f"{what} must be from 0 to {MAX_SECONDS:,} seconds (100 years), not {value!r}."
        )
    return seconds
