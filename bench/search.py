"""Search and history: GET /api/jobs with `q`, `status` and `sort` over 100,000 finished jobs (issue 15, item 9),
against the plain first page of the same history. Target: p99 <= 50 ms for a search page."""

from __future__ import annotations

import asyncio
import time

import httpx

from bench.accept import finished_history, wait_folded
from bench.harness import Report, nats_server, summary_ms, tubeflow

TOPICS = ["cats", "dogs", "rust", "python", "jazz", "chess", "cooking", "physics", "poetry", "football"]


def named(n: int) -> tuple[str, str]:
    return f"https://video.example.com/watch?v=id{n:06d}", f"Talk {n}: {TOPICS[n % len(TOPICS)]} and more"


QUERIES = {
    "first page, no filter": {},
    "q matching 1 in 10 (a topic)": {"q": "Jazz"},
    "q matching one job (an id in the URL)": {"q": "id004242"},
    "q matching none (every job looked at)": {"q": "no such talk"},
    "status=failed (none: every job looked at)": {"status": "failed"},
    "sort=finished": {"sort": "finished"},
}


def measure(base: str, params: dict, rounds: int, new_job_first: bool = False) -> list[float]:
    samples = []
    with httpx.Client(timeout=10) as client:
        for n in range(rounds):
            if new_job_first:  # the joined text is stale again: this search rebuilds it
                posted = client.post(f"{base}/api/jobs", json={"url": f"https://video.example.com/new{n}"})
                assert posted.status_code == 202, posted.text
                time.sleep(0.05)  # the hub learns of it through the read models
            started = time.perf_counter()
            response = client.get(f"{base}/api/jobs", params={"limit": 50, **params})
            samples.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
    return samples


def run(quick: bool) -> Report:
    jobs = 2_000 if quick else 100_000
    rounds = 30 if quick else 300
    report = Report("search")
    with nats_server() as server:
        started = time.perf_counter()
        asyncio.run(finished_history(server.url, jobs, named))
        written = time.perf_counter() - started
        with tubeflow(server.url, ["api", "progress"]) as stack:
            wait_folded(stack.base, jobs, timeout=1200)
            folded = time.perf_counter() - started
            found = httpx.get(f"{stack.base}/api/jobs", params={"q": "id004242" if not quick else "id000042"}).json()
            assert len(found["jobs"]) == 1, found
            for what, params in QUERIES.items():
                report.add(what=f"GET /api/jobs {what}", jobs=jobs, **summary_ms(measure(stack.base, params, rounds)))
            after_new = summary_ms(
                measure(stack.base, {"q": "no such talk"}, max(10, rounds // 10), new_job_first=True)
            )
            report.add(
                what="GET /api/jobs q matching none, a new job before each (text joined again)", jobs=jobs, **after_new
            )
    report.notes.append(f"history: {jobs} finished jobs written as events in {written:.1f} s, folded by {folded:.1f} s")
    report.notes.append("target: p99 <= 50 ms for a search page")
    return report
