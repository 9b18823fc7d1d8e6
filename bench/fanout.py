"""SSE fan-out: many SSE clients on one API process following 10 active jobs, against one client. Delivery latency is
publish of a progress event -> the client has the update (publisher and clients share this process's clock)."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime, timezone
from urllib.parse import urlsplit

from bench.harness import Report, nats_server, rss_mib, summary_ms, tubeflow
from contracts import events as ev
from contracts.ids import new_job_id, random_event_id, step_event_id
from services.runtime.nats import STREAM, EventPublisher, connect, ensure_topology

JOBS = 10


def event(kind: str, job: str, data: ev.Payload, item: str | None = None, event_id: str | None = None) -> ev.Envelope:
    return ev.make_event(
        kind,
        job_id=job,
        item_id=item,
        data=data,
        occurred_at=datetime.now(timezone.utc),
        event_id=event_id or random_event_id(),
    )


async def running_jobs(publisher: EventPublisher, count: int) -> list[str]:
    """``count`` one-item jobs whose item is queued, so progress events move their bars."""
    jobs = [new_job_id() for _ in range(count)]
    for job in jobs:
        await publisher.publish(
            event(
                "requested",
                job,
                ev.Requested(url="http://video.example.com/v"),
                event_id=step_event_id(job, "requested"),
            )
        )
        await publisher.publish(event("resolved", job, ev.Resolved(kind="video", item_count=1, worker="w")))
        await publisher.publish(
            event("item.queued", job, ev.ItemQueued(index=1, url="u", mode="video", audio_format="mp3"), "0001")
        )
    await asyncio.sleep(1.0)
    return jobs


async def scenario(base: str, nats_url: str, clients: int, updates: int, api_pid: int) -> dict:
    nc = await connect(nats_url, "bench-fanout")
    js = nc.jetstream()
    await ensure_topology(js)
    publisher = EventPublisher(js)
    jobs = await running_jobs(publisher, JOBS)
    sent_at: dict[tuple[str, int], float] = {}
    latencies: list[tuple[int, float]] = []  # (update number, seconds)
    connected = 0
    done = asyncio.Event()

    host, port = urlsplit(base).hostname, urlsplit(base).port
    progress = re.compile(rb'"downloaded_bytes":(\d+)')

    async def client(job: str) -> None:
        """A minimal SSE client (raw socket, a regex for the item's bytes): 1,000 httpx streams parsed line by line
        in this process took more CPU than the API serving them, and measured the load generator instead."""
        nonlocal connected
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            f"GET /api/jobs/{job}/stream HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        connected += 1
        buffer = b""
        try:
            while not done.is_set():
                chunk = await reader.read(65536)
                if not chunk:
                    return
                got = time.perf_counter()
                buffer += chunk
                end = 0
                for match in progress.finditer(buffer):
                    end = match.end()
                    key = (job, int(match.group(1)))
                    if key in sent_at:
                        latencies.append((key[1], got - sent_at[key]))
                buffer = buffer[end:] if end else buffer[-64:]
        finally:
            writer.close()

    tasks = [asyncio.create_task(client(jobs[i % JOBS])) for i in range(clients)]
    while connected < clients:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    peak_rss = rss_mib(api_pid)
    for step in range(1, updates + 1):
        for job in jobs:
            sent_at[(job, step)] = time.perf_counter()
            await publisher.publish(
                event(
                    "download.progress",
                    job,
                    ev.DownloadProgress(worker="w", downloaded_bytes=step, total_bytes=updates * 10),
                    "0001",
                )
            )
        await asyncio.sleep(0.5)
        peak_rss = max(peak_rss, rss_mib(api_pid))
    await asyncio.sleep(1.0)
    done.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    consumers = (await js.stream_info(STREAM)).state.consumer_count
    await nc.close()
    return {"latencies": latencies, "rss": peak_rss, "consumers": consumers, "expected": clients * updates}


def run(quick: bool) -> Report:
    report = Report("fanout")
    sizes = (1, 50) if quick else (1, 1000)
    updates = 4 if quick else 10
    # Every client of this benchmark comes from 127.0.0.1: the per-client stream limit is lifted for it.
    limits = {"TUBEFLOW_SSE_MAX_STREAMS_PER_CLIENT": "0", "TUBEFLOW_SSE_MAX_STREAMS": "0"}
    with nats_server() as server, tubeflow(server.url, ["api", "progress"], limits) as stack:
        api_pid = stack.processes[0].pid
        for clients in sizes:
            result = asyncio.run(scenario(stack.base, server.url, clients, updates, api_pid))
            report.add(
                what="SSE delivery",
                clients=clients,
                **summary_ms([seconds for _, seconds in result["latencies"]]),
                expected=result["expected"],
                api_rss_mib=result["rss"],
                stream_consumers=result["consumers"],
            )
            report.add(
                what="  the same after the first update",
                clients=clients,
                **summary_ms([seconds for step, seconds in result["latencies"] if step > 1]),
            )
    report.notes.append(
        "targets: p99 <= 100 ms with 1,000 clients; API RSS <= 250 MiB; consumers independent of clients"
    )
    report.notes.append(
        "latency includes the projector's fold and KV write: publish -> projector -> KV -> API -> client"
    )
    report.notes.append("the first update after all clients connected at once pays for the connection storm's GC")
    return report
