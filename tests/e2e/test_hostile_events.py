"""Events no API would write, put straight into a data dir's stream (as an old version, a bug or someone with NATS
access could): `tubeflow up` starts on it, shows what it can, and stays up (issue 23, item 1: one PATCH with an
interval of 3,000,000 days stopped every service, and the data dir never started again)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone

import httpx
import nats
import pytest

from contracts.ids import new_job_id
from contracts.subscriptions import new_subscription_id, subscription_subject
from services.runtime.embedded import EmbeddedNats
from tests.conftest import start_stack, stop_stack

pytestmark = pytest.mark.e2e

NOW = datetime.now(timezone.utc).isoformat()


def subscription_events(interval: str, failures: int) -> tuple[str, list[tuple[str, bytes]]]:
    sid = new_subscription_id()
    created = {
        "event_id": f"{sid}-c",
        "type": "subscription.created",
        "subscription_id": sid,
        "occurred_at": NOW,
        "data": {"url": "http://127.0.0.1:9/feed.xml", "interval": "@@", "start": True},
    }
    out = [(subscription_subject(sid, "created"), json.dumps(created).replace('"@@"', interval).encode())]
    for n in range(max(failures, 1)):
        checked = {
            "event_id": f"{sid}-k{n}",
            "type": "subscription.checked",
            "subscription_id": sid,
            "occurred_at": NOW,
            "data": {"error": {"code": "network", "message": "refused"}} if failures else {},
        }
        out.append((subscription_subject(sid, "checked"), json.dumps(checked).encode()))
    return sid, out


def job_events(job: str) -> list[tuple[str, bytes]]:
    base = {"job_id": job, "version": 1}
    raw = [
        # A naive instant at the calendar's start (JSON carries no zone).
        {**base, "event_id": f"{job}-r", "type": "requested", "occurred_at": "0001-01-01T00:00:00",
         "data": {"url": "http://127.0.0.1:9/v.mp4"}},
        {**base, "event_id": f"{job}-q", "type": "item.queued", "item_id": "0", "occurred_at": NOW,
         "data": {"index": -(2**63), "url": "x", "mode": "video", "audio_format": "mp3", "round": 10**30}},
        {**base, "event_id": f"{job}-p", "type": "download.progress", "item_id": "0",
         "occurred_at": "9999-12-31T23:59:59+00:00",
         "data": {"worker": "w", "downloaded_bytes": 10**30, "total_bytes": -5, "speed": "@@", "eta": "@@"}},
    ]  # fmt: skip
    out = [(f"tubeflow.job.{job}.{e['type']}", json.dumps(e).replace('"@@"', "NaN").encode()) for e in raw]
    out.append((f"tubeflow.job.{job}.download.progress", b"\xff not an event"))
    return out


async def publish(url: str, messages: list[tuple[str, bytes]]) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for subject, data in messages:
            await js.publish(subject, data)
    finally:
        await nc.close()


def test_up_starts_and_stays_up_on_a_stream_holding_events_no_api_would_write(tmp_path, monkeypatch):
    monkeypatch.delenv("TUBEFLOW_NATS_URL", raising=False)
    data_dir = tmp_path / "data"
    # A first start makes the streams; then, with `up` stopped, the events go straight into its store.
    first = start_stack(data_dir, {})
    assert stop_stack(first) == 0
    job = new_job_id()
    huge, huge_events = subscription_events(str(3_000_000 * 86400.0), 0)  # what PATCH {"interval": "3000000d"} stored
    endless, endless_events = subscription_events("1e400", 0)  # Infinity
    failing, failing_events = subscription_events("3600", 1100)  # 2 ** 1099 times the interval
    server = EmbeddedNats(data_dir / "nats")
    asyncio.run(publish(server.start(), [*huge_events, *endless_events, *failing_events, *job_events(job)]))
    server.stop()

    stack = start_stack(data_dir, {})
    try:
        deadline = time.monotonic() + 20
        while True:
            listed = {s["id"]: s for s in httpx.get(f"{stack.base}/api/subscriptions").json()}
            if {huge, endless, failing} <= listed.keys() or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert {huge, endless, failing} <= listed.keys(), listed.keys()
        for sid in (huge, endless, failing):
            assert listed[sid]["next_check_at"] is not None, listed[sid]
        assert listed[failing]["failures"] == 1100
        # The job's view is there too, as far as its readable events go.
        deadline = time.monotonic() + 20
        while (answer := httpx.get(f"{stack.base}/api/jobs/{job}")).status_code != 200:
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.2)
        assert answer.json()["created_at"].startswith("0001-01-01T00:00:00")
        # And it stays up: the scheduler has looked at the subscriptions many times by now.
        time.sleep(3)
        assert stack.process.poll() is None, stack.log.read_text()[-3000:]
        assert httpx.get(f"{stack.base}/readyz").status_code == 200
    finally:
        code = stop_stack(stack)
    assert code == 0, stack.log.read_text()[-3000:]
