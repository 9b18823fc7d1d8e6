"""Accept latency: POST /api/jobs p50/p99 with 1 and 16 concurrent clients, against a raw JetStream publish round
trip on the same server, with an empty history and with 10,000 finished jobs in it."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

import httpx
import nats

from bench.harness import Report, metrics_snapshot, nats_server, summary_ms, tubeflow
from contracts import events as ev
from contracts.ids import new_job_id
from services.runtime.nats import EventPublisher, connect, ensure_topology
from tests.support.events import events_of


async def raw_publish(url: str, count: int) -> list[float]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="BENCH_RAW", subjects=["bench.raw.>"])
    samples = []
    for i in range(count):
        started = time.perf_counter()
        await js.publish(f"bench.raw.{i}", b'{"url":"http://video.example.com/v"}', headers={"Nats-Msg-Id": str(i)})
        samples.append(time.perf_counter() - started)
    await nc.close()
    return samples


async def post_jobs(base: str, count: int, concurrency: int) -> list[float]:
    samples: list[float] = []
    queue = list(range(count))

    async def client_loop(client: httpx.AsyncClient) -> None:
        while queue:
            queue.pop()
            started = time.perf_counter()
            response = await client.post(f"{base}/api/jobs", json={"url": "http://video.example.com/watch?v=1"})
            samples.append(time.perf_counter() - started)
            assert response.status_code == 202, response.text

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    return samples


async def finished_history(url: str, jobs: int, named=None) -> None:  # noqa: ANN001
    """``jobs`` completed single-video jobs, written as their events (requested ... download.completed);
    ``named(n)``: the n-th job's (URL, title), when they should differ."""
    nc = await connect(url, "bench-history")
    js = nc.jetstream()
    await ensure_topology(js)
    publisher = EventPublisher(js)
    now = datetime.now(timezone.utc)

    def job_events(job: str, n: int) -> list[ev.Envelope]:
        address, title = named(n) if named else ("http://video.example.com/v", None)
        steps = [
            ("requested", ev.Requested(url=address), None),
            ("resolved", ev.Resolved(kind="video", title=title, item_count=1, worker="w"), None),
            ("item.queued", ev.ItemQueued(index=1, url="u", mode="video", audio_format="mp3"), "0001"),
            ("download.started", ev.DownloadStarted(worker="w"), "0001"),
            ("download.completed", ev.DownloadCompleted(worker="w", file="f.mp4", size=1000), "0001"),
        ]
        return events_of(job, steps, start=now)

    pending: list[ev.Envelope] = []
    for n in range(jobs):
        pending += job_events(new_job_id(), n)
        if len(pending) >= 1000:
            await asyncio.gather(*(publisher.publish(e) for e in pending))
            pending = []
    await asyncio.gather(*(publisher.publish(e) for e in pending))
    await nc.close()


def wait_folded(base: str, completed: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    seen: dict = {}
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < deadline:
            seen = metrics_snapshot(client, base)
            if seen.get('tubeflow_jobs{status="completed"}', 0) >= completed:
                return
            time.sleep(0.2)
    jobs = {k: v for k, v in seen.items() if k.startswith("tubeflow_jobs")}
    raise TimeoutError(f"{completed} completed jobs were not folded within {timeout} s; the API at {base} said {jobs}")


def run(quick: bool) -> Report:
    count = 100 if quick else 2000
    history = 500 if quick else 10_000
    report = Report("accept")
    p99: dict[tuple[int, int], float] = {}
    with nats_server() as server:
        raw = asyncio.run(raw_publish(server.url, count))
        raw_summary = summary_ms(raw)
    report.add(what="raw JetStream publish (baseline)", clients=1, **raw_summary)
    for finished in (0, history):
        with nats_server() as server:
            if finished:
                asyncio.run(finished_history(server.url, finished))
            with tubeflow(server.url, ["api", "progress"]) as api:
                wait_folded(api.base, finished)
                for concurrency in (1, 16):
                    stats = summary_ms(asyncio.run(post_jobs(api.base, count, concurrency)))
                    p99[(finished, concurrency)] = stats["p99_ms"]
                    report.add(
                        what="POST /api/jobs",
                        finished_jobs=finished,
                        clients=concurrency,
                        **stats,
                        p99_vs_raw=round(stats["p99_ms"] / raw_summary["p99_ms"], 2),
                    )
    for concurrency in (1, 16):
        report.add(
            what=f"p99 with {history} finished jobs / with none",
            clients=concurrency,
            ratio=round(p99[(history, concurrency)] / p99[(0, concurrency)], 2),
        )
    report.notes.append("targets: p99 <= 8 ms here; unchanged (+-10 %) with 10,000 finished jobs in history")
    report.notes.append(
        "API and projector run (accepted jobs are folded, not fetched); the load generator shares the cores"
    )
    return report
