"""List latency: GET /api/jobs?limit=50 with many jobs in history against the same with 10 jobs."""

from __future__ import annotations

import asyncio
import time

import httpx

from bench.accept import post_jobs
from bench.harness import Report, nats_server, summary_ms, tubeflow


def measure(base: str, rounds: int) -> list[float]:
    samples = []
    with httpx.Client(timeout=10) as client:
        for _ in range(rounds):
            started = time.perf_counter()
            response = client.get(f"{base}/api/jobs", params={"limit": 50})
            samples.append(time.perf_counter() - started)
            assert response.status_code == 200
    return samples


def run(quick: bool) -> Report:
    many = 500 if quick else 10_000
    rounds = 50 if quick else 500
    report = Report("list")
    results = {}
    for jobs in (10, many):
        with nats_server() as server, tubeflow(server.url, ["api", "progress"]) as stack:
            asyncio.run(post_jobs(stack.base, jobs, 16))
            time.sleep(1.0)
            results[jobs] = summary_ms(measure(stack.base, rounds))
            report.add(what="GET /api/jobs?limit=50", jobs=jobs, **results[jobs])
    report.add(
        what="ratio",
        jobs=f"{many} vs 10",
        p50_ms=round(results[many]["p50_ms"] / results[10]["p50_ms"], 2),
        p99_ms=round(results[many]["p99_ms"] / results[10]["p99_ms"], 2),
    )
    report.notes.append("target: <= 1.2x")
    return report
