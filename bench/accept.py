"""Accept latency: POST /api/jobs p50/p99 with 1 and 16 concurrent clients, against a raw JetStream publish round
trip on the same server. Only the API runs: accepted jobs are not fetched."""

from __future__ import annotations

import asyncio
import time

import httpx
import nats

from bench.harness import Report, nats_server, summary_ms, tubeflow


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


def run(quick: bool) -> Report:
    count = 100 if quick else 2000
    report = Report("accept")
    with nats_server() as server:
        raw = asyncio.run(raw_publish(server.url, count))
        raw_summary = summary_ms(raw)
        report.add(what="raw JetStream publish (baseline)", clients=1, **raw_summary)
        with tubeflow(server.url, ["api"]) as api:
            for concurrency in (1, 16):
                stats = summary_ms(asyncio.run(post_jobs(api.base, count, concurrency)))
                report.add(
                    what="POST /api/jobs",
                    clients=concurrency,
                    **stats,
                    p99_vs_raw=round(stats["p99_ms"] / raw_summary["p99_ms"], 2),
                )
    report.notes.append("target: p99 <= 8 ms here")
    return report
