"""Progress latency: the downloader's hook sees bytes -> an SSE client following that job has the update, with 20
jobs downloading at once, against a raw KV put -> watch round trip in the same run.

A progress event's `occurred_at` is the moment yt-dlp's hook reported the bytes (not when the throttle sent it), and
the SSE `job` message carries it as `updated_at`; hook, API and clients share this machine's clock. Throttling
(TUBEFLOW_PROGRESS_INTERVAL) is turned off here so that every measured update is a hook call, not a wait by design.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

import httpx
from nats.js import api

from bench.harness import Report, media_server, nats_server, summary_ms, tubeflow
from services.runtime.nats import connect
from tests.support.sse import sse_events


async def kv_round_trips(nats_url: str, count: int) -> list[float]:
    """The baseline: put a key, wait for a watcher of that key to see it."""
    nc = await connect(nats_url, "bench-latency")
    js = nc.jetstream()
    kv = await js.create_key_value(api.KeyValueConfig(bucket="bench_latency", history=1, storage=api.StorageType.FILE))
    watcher = await kv.watch("probe")
    await watcher.updates(timeout=5)  # the "no values yet" marker
    samples = []
    for n in range(count):
        started = time.perf_counter()
        await kv.put("probe", str(n).encode())
        while True:
            entry = await watcher.updates(timeout=5)
            if entry is not None and entry.value == str(n).encode():
                break
        samples.append(time.perf_counter() - started)
    await watcher.stop()
    await js.delete_key_value("bench_latency")
    await nc.close()
    return samples


async def follow(base: str, urls: list[str]) -> tuple[list[float], int]:
    latencies: list[float] = []
    terminal = 0
    limits = httpx.Limits(max_connections=len(urls) + 10)
    async with httpx.AsyncClient(timeout=httpx.Timeout(120), limits=limits) as http:
        ids = [(await http.post(f"{base}/api/jobs", json={"url": url})).json()["id"] for url in urls]
        opened = datetime.now(timezone.utc)

        async def client(job: str) -> None:
            nonlocal terminal
            async with http.stream("GET", f"{base}/api/jobs/{job}/stream") as response:
                async for message in sse_events(response):
                    if message.event != "job":
                        continue
                    got = datetime.now(timezone.utc)
                    view = message.json()
                    updated = datetime.fromisoformat(view["updated_at"].replace("Z", "+00:00"))
                    # The snapshot at connect time carries an older update; only live updates are measured.
                    if updated >= opened and view["status"] == "running":
                        latencies.append((got - updated).total_seconds())
                    if view["status"] in ("completed", "partial", "failed", "cancelled"):
                        terminal += 1
                        return

        await asyncio.wait_for(asyncio.gather(*(client(job) for job in ids)), timeout=600)
    return latencies, terminal


def run(quick: bool) -> Report:
    jobs = 3 if quick else 20
    rate = 1_000_000 if quick else 200_000
    report = Report("latency")
    with nats_server() as nats, media_server() as media:
        baseline = asyncio.run(kv_round_trips(nats.url, 100 if quick else 1000))
        urls = [media.url(media.fresh("clip.mp4"), rate=rate) for _ in range(jobs)]
        env = {"TUBEFLOW_DOWNLOAD_CONCURRENCY": str(jobs), "TUBEFLOW_PROGRESS_INTERVAL": "0"}
        with tubeflow(nats.url, ["up"], env) as stack:
            latencies, terminal = asyncio.run(follow(stack.base, urls))
    report.add(what="raw KV put -> watch (baseline)", **summary_ms(baseline))
    report.add(
        what=f"hook -> SSE client, {jobs} jobs at {rate // 1000} KB/s each",
        **summary_ms(latencies),
        jobs_finished=terminal,
        p99_over_baseline=round(
            sorted(latencies)[int(0.99 * (len(latencies) - 1))] / sorted(baseline)[int(0.99 * (len(baseline) - 1))], 1
        )
        if latencies
        else None,
    )
    report.notes.append("target: p99 <= 25 ms; path: hook -> NATS -> projector fold -> KV -> API -> SSE client")
    return report
