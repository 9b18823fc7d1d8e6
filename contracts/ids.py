"""Identifiers: time-ordered job ids (newest sorts last) and deterministic event ids for retryable steps."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case: safe in NATS subjects and URLs


_last = [0]
_lock = threading.Lock()


def new_job_id(now_ms: int | None = None) -> str:
    """26 characters: 48 bits of milliseconds then 80 random bits, so ids sort by creation time. Within one process
    they keep increasing also within a millisecond (and if the clock steps back): the next id is the last plus one
    (jobs created in the same millisecond were listed in random order, issue 23)."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    if now_ms is None:
        with _lock:
            if value >> 80 <= _last[0] >> 80:
                value = _last[0] + 1
            _last[0] = value
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def is_job_id(text: str) -> bool:
    return len(text) == 26 and all(c in _ALPHABET for c in text)


def item_id(index: int) -> str:
    return f"{index:04d}"


def step_event_id(
    job_id: str, event_type: str, item: str | None = None, attempt: int | None = None, round: int = 0
) -> str:
    """The id of an event that a redelivered handler publishes again: equal ids are deduplicated by JetStream.
    ``round`` counts `POST /retry`s of the job, so a retried step is a new event, not a duplicate."""
    parts = [job_id, event_type]
    if item is not None:
        parts.append(item)
    if attempt is not None:
        parts.append(str(attempt))
    if round:
        parts.append(f"r{round}")
    return ":".join(parts)


def random_event_id() -> str:
    return os.urandom(16).hex()
