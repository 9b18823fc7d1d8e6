"""A big playlist: one job of N items through `tubeflow up`. What one progress update costs an SSE client (bytes),
and how fast GET of the job answers while it runs."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx

from bench.harness import Report, media_server, nats_server, percentile, summary_ms, tubeflow
from tests.support.sse import sse_events


async def follow_bytes(base: str, job_id: str) -> list[int]:
    """Bytes of every SSE message of the job (data line plus framing), snapshot included."""
    sizes: list[int] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(600)) as client:
        async with client.stream("GET", f"{base}/api/jobs/{job_id}/stream") as response:
            async for message in sse_events(response):
                sizes.append(len(message.data) + len(message.event) + 30)
    return sizes


def run(quick: bool) -> Report:
    report = Report("playlist")
    for count in [50] if quick else [1000, 10000]:
        measure(count, report)
    report.notes.append("during the run the GET sampler shares the benchmark process (and its GIL) with the SSE client")
    return report


def measure(count: int, report: Report) -> None:
    with nats_server() as nats, media_server() as media:
        from tests.support.media import make_clip

        make_clip(media.root / "tiny.mp4", seconds=1, size="64x48", bitrate="20k")
        with tubeflow(
            nats.url, ["up"], {"TUBEFLOW_DOWNLOAD_CONCURRENCY": "3", "TUBEFLOW_MAX_PLAYLIST_ITEMS": str(count)}
        ) as stack:
            url = f"{media.base}/feed.xml?count={count}&name=tiny.mp4"
            job = httpx.post(f"{stack.base}/api/jobs", json={"url": url, "mode": "video"}).json()
            gets: list[float] = []
            done = threading.Event()

            def sample_gets() -> None:
                with httpx.Client(timeout=30) as client:
                    while not done.is_set():
                        started = time.perf_counter()
                        client.get(f"{stack.base}/api/jobs/{job['id']}")
                        gets.append(time.perf_counter() - started)
                        time.sleep(0.2)

            sampler = threading.Thread(target=sample_gets, daemon=True)
            sampler.start()
            started = time.perf_counter()
            sizes = asyncio.run(follow_bytes(stack.base, job["id"]))
            elapsed = time.perf_counter() - started
            done.set()
            sampler.join()
            view = httpx.get(f"{stack.base}/api/jobs/{job['id']}").json()
            listed = any(s["id"] == job["id"] for s in httpx.get(f"{stack.base}/api/jobs").json()["jobs"])
            after: list[float] = []
            with httpx.Client(timeout=30) as client:
                for _ in range(50):
                    started_get = time.perf_counter()
                    client.get(f"{stack.base}/api/jobs/{job['id']}")
                    after.append(time.perf_counter() - started_get)
    # One progress update = an item message and the job message after it; the first message is the snapshot.
    updates = [a + b for a, b in zip(sizes[1::2], sizes[2::2], strict=False)]
    report.add(
        what=f"{count}-item playlist",
        status=view["status"],
        completed=view["download"]["completed"],
        items_in_view=len(view["items"]),
        listed=listed,
        seconds=round(elapsed, 1),
        sse_messages=len(sizes),
    )
    report.add(
        what=f"{count} items: SSE bytes per update (item + job message)",
        p50=percentile(updates, 50),
        p99=percentile(updates, 99),
        max=max(updates) if updates else 0,
        target="<= 2 KB",
    )
    report.add(what=f"{count} items: GET /api/jobs/{{id}} during the run", **summary_ms(gets), target="<= 50 ms")
    report.add(what=f"{count} items: GET /api/jobs/{{id}} after the run", **summary_ms(after), target="<= 50 ms")
