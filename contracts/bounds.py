"""Bounds on times and durations that strangers (or old writers) can put in a stored event: every fold and reader
can compute with them without raising (a stored event must never stop a service or keep a data dir from starting)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Annotated

from pydantic import AfterValidator

LATEST = datetime.max.replace(tzinfo=timezone.utc)
EARLIEST = datetime.min.replace(tzinfo=timezone.utc)
# The longest interval, delay or backoff anything schedules: a year (a longer one is refused at the API and clamped
# when an old event holds it).
MAX_DURATION = 366 * 86400.0


def as_utc(value: datetime) -> datetime:
    """An instant with a zone: a naive one (JSON can carry one) is taken as UTC, so that instants always compare."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


# Every instant on the wire and in a view: naive ones are made UTC when read.
Instant = Annotated[datetime, AfterValidator(as_utc)]


def seconds(value: float, low: float = 0.0, high: float = MAX_DURATION) -> float:
    """``value`` within [low, high]; NaN counts as ``high`` (the safe side for a delay)."""
    if math.isnan(value):
        return high
    return min(max(value, low), high)


def later(at: datetime, delay: float) -> datetime:
    """``at`` plus ``delay`` seconds (bounded), saturating at the ends of the calendar instead of raising."""
    try:
        return at + timedelta(seconds=seconds(delay, -MAX_DURATION))
    except OverflowError:
        return LATEST if delay > 0 else EARLIEST
