"""Webhook deliveries (WIP, issue 16): one record per (webhook, job, run, outcome) in the deliveries bucket, created
with `create` so that one notifier replica of many sends it; retried with exponential backoff for 24 h, then dead.

Record: {id, webhook, event, job_id, status: pending|delivered|dead, attempts, next_at, last_error, last_status,
created_at, delivered_at}. A replica takes a due attempt by updating the record at the revision it read (the first
wins), so two replicas never send the same attempt."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field

FIRST_RETRY = 5.0
MAX_RETRY = 3600.0
GIVE_UP_AFTER = 24 * 3600.0


def delivery_id(webhook: str, job_id: str, run: int, event: str) -> str:
    return hashlib.sha256(f"{webhook}|{job_id}|{run}|{event}".encode()).hexdigest()[:32]


def next_delay(attempts: int, first: float = FIRST_RETRY) -> float:
    """5 s, 10 s, 20 s, … at most an hour apart."""
    return min(MAX_RETRY, first * 2 ** max(0, attempts - 1))


@dataclass
class Delivery:
    id: str
    webhook: str
    event: str
    job_id: str
    body: dict
    status: str = "pending"
    attempts: int = 0
    created_at: float = field(default_factory=time.time)
    next_at: float = field(default_factory=time.time)
    last_error: str | None = None
    last_status: int | None = None
    delivered_at: float | None = None

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> "Delivery":
        return cls(**json.loads(data))

    def failed(self, error: str, status: int | None, now: float, first: float = FIRST_RETRY) -> None:
        self.last_error, self.last_status = error[:500], status
        if now - self.created_at >= GIVE_UP_AFTER:
            self.status = "dead"
        else:
            self.next_at = now + next_delay(self.attempts, first)

    def succeeded(self, status: int, now: float) -> None:
        self.status, self.last_status, self.delivered_at, self.last_error = "delivered", status, now, None
