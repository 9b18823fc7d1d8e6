"""Optional tracing: with TUBEFLOW_TRACING=true every event of a job carries the same trace id in its `traceparent`
NATS header, from the POST through the downloader and the extractor; without it, no header is added."""

from __future__ import annotations

import asyncio
import time

import httpx
import nats
import pytest

from contracts.events import job_filter
from services.runtime.nats import STREAM
from tests.conftest import start_stack, stop_stack

pytestmark = pytest.mark.e2e


async def headers_of_job(nats_url: str, job_id: str) -> list[tuple[str, dict]]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(job_filter(job_id), stream=STREAM, ordered_consumer=True)
        out = []
        while True:
            try:
                msg = await sub.next_msg(timeout=1)
            except nats.errors.TimeoutError:
                return out
            out.append((msg.subject.split(".", 3)[-1], dict(msg.headers or {})))
    finally:
        await nc.close()


def wait_done(base: str, job_id: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        view = httpx.get(f"{base}/api/jobs/{job_id}").json()
        if view["status"] in ("completed", "partial", "failed"):
            return view
        time.sleep(0.1)
    raise AssertionError(view)


def test_one_trace_follows_a_job_across_services(tmp_path, media, monkeypatch):
    from services.runtime.embedded import EmbeddedNats

    server = EmbeddedNats(tmp_path / "nats")
    url = server.start()
    stack = start_stack(
        tmp_path / "data",
        {"TUBEFLOW_NATS_URL": url, "TUBEFLOW_TRACING": "true", "TUBEFLOW_ALLOWED_NETWORKS": "127.0.0.0/8"},
    )
    try:
        job = httpx.post(
            f"{stack.base}/api/jobs", json={"url": media.url(media.fresh("clip1.mp4")), "mode": "both"}
        ).json()
        assert wait_done(stack.base, job["id"])["status"] == "completed"
        events = asyncio.run(headers_of_job(url, job["id"]))
    finally:
        stop_stack(stack)
        server.stop()
    types = [t for t, _ in events]
    assert {"requested", "resolved", "item.queued", "download.completed", "extract.completed"} <= set(types)
    parents = [h.get("traceparent") for _, h in events]
    assert all(parents), list(zip(types, parents, strict=True))
    trace_ids = {p.split("-")[1] for p in parents}
    assert len(trace_ids) == 1, trace_ids
    span_ids = {p.split("-")[2] for p in parents}
    assert len(span_ids) >= 4  # the API's span, then one per handled event along the way


def test_without_tracing_no_header_is_added(stack, media):
    job = httpx.post(f"{stack.base}/api/jobs", json={"url": media.url("clip2.mp4")}).json()
    wait_done(stack.base, job["id"])
    events = asyncio.run(headers_of_job(stack.nats_url, job["id"]))
    assert events and all("traceparent" not in h for _, h in events)
