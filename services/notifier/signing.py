"""Webhook deliveries are signed: ``X-Tubeflow-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``
with ``X-Tubeflow-Timestamp`` (Unix seconds) and ``X-Tubeflow-Delivery`` (the same id on every retry, for the
receiver's idempotency). A receiver recomputes the HMAC over the timestamp and the raw body, compares in constant
time, and refuses old timestamps (replays)."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE = "X-Tubeflow-Signature"
TIMESTAMP = "X-Tubeflow-Timestamp"
DELIVERY = "X-Tubeflow-Delivery"
EVENT = "X-Tubeflow-Event"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, now: float, tolerance: float = 300.0) -> bool:
    """What a receiver does (and the tests): a valid signature of a recent timestamp."""
    try:
        stamped = int(timestamp)
    except ValueError:
        return False
    if abs(now - stamped) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, stamped, body), signature)


def headers(secret: str, timestamp: int, body: bytes, delivery: str, event: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        SIGNATURE: sign(secret, timestamp, body),
        TIMESTAMP: str(timestamp),
        DELIVERY: delivery,
        EVENT: event,
        "User-Agent": "tubeflow-webhooks/1",
    }
