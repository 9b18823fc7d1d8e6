"""Webhook signatures and delivery backoff (issue 16, work in progress)."""

from __future__ import annotations

from services.notifier.signing import headers, sign, verify
from services.runtime.deliveries import GIVE_UP_AFTER, Delivery, delivery_id, next_delay


def test_a_signature_verifies_only_for_its_secret_body_and_a_recent_time():
    body = b'{"event":"job.completed"}'
    sent = headers("s3cret", 1000, body, "d1", "job.completed")
    signature, stamp = sent["X-Tubeflow-Signature"], sent["X-Tubeflow-Timestamp"]
    assert signature == sign("s3cret", 1000, body) and signature.startswith("sha256=")
    assert verify("s3cret", stamp, body, signature, now=1010)
    assert not verify("other", stamp, body, signature, now=1010)
    assert not verify("s3cret", stamp, body + b" ", signature, now=1010)
    assert not verify("s3cret", stamp, body, signature, now=1000 + 3600)  # a replay, an hour later


def test_retries_back_off_and_give_up_after_a_day():
    assert [next_delay(n) for n in (1, 2, 3)] == [5.0, 10.0, 20.0] and next_delay(30) == 3600.0
    assert delivery_id("w", "j", 0, "job.completed") == delivery_id("w", "j", 0, "job.completed")
    assert delivery_id("w", "j", 1, "job.completed") != delivery_id("w", "j", 0, "job.completed")
    d = Delivery(id="d", webhook="w", event="job.failed", job_id="j", body={}, created_at=0.0)
    d.attempts = 1
    d.failed("HTTP 500", 500, now=10.0)
    assert d.status == "pending" and d.next_at == 15.0
    d.failed("HTTP 500", 500, now=GIVE_UP_AFTER + 1)
    assert d.status == "dead"
    assert Delivery.decode(d.encode()) == d
