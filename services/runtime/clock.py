"""Wall-clock time for event timestamps, in one place so handlers can be given a fixed clock in tests."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
