"""Throughput: N distinct local URLs, concurrency 3, first POST -> last completed through `tubeflow up`, against bare
yt-dlp (3 threads, one reused YoutubeDL each) downloading the same files. Also the stack's memory and the largest
event-loop lag of the API process during the run (`tubeflow up` runs every service on that loop)."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import yt_dlp

from bench.harness import Report, media_server, metric_value, nats_server, rss_mib, tubeflow, wait_all_finished
from services.runtime.embedded import EmbeddedNats

CONCURRENCY = 3


def bare_ytdlp(urls: list[str], threads: int = CONCURRENCY) -> float:
    out = Path(tempfile.mkdtemp(prefix="bench-bare-"))
    local = threading.local()

    def fetch(url: str) -> None:
        if not hasattr(local, "ydl"):
            local.ydl = yt_dlp.YoutubeDL(
                {"quiet": True, "no_warnings": True, "noprogress": True, "outtmpl": str(out / "%(id)s.%(ext)s")}
            )
        local.ydl.download([url])

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fetch, urls))
    elapsed = time.perf_counter() - started
    shutil.rmtree(out, ignore_errors=True)
    return elapsed


@dataclass
class StackRun:
    elapsed: float
    completed: int
    idle_mib: float
    peak_mib: float
    max_loop_lag_ms: float
    lag_over_20ms: int


def run_stack(nats: EmbeddedNats, urls: list[str]) -> StackRun:
    """POST every URL to a fresh `tubeflow up`, wait for the last to finish; sample memory and the API's loop lag."""
    with tubeflow(nats.url, ["up"], {"TUBEFLOW_DOWNLOAD_CONCURRENCY": str(CONCURRENCY)}) as stack:
        pids = [*stack.pids, nats.process.pid]  # type: ignore[union-attr]
        time.sleep(1.0)
        idle = sum(rss_mib(pid) for pid in pids)
        peak = idle
        max_lag = 0.0
        stop = threading.Event()
        with httpx.Client(timeout=10) as metrics_client:
            # The histogram before the run: the difference afterwards is the run's own distribution.
            before_over = metric_value(
                metrics_client, stack.base, "tubeflow_event_loop_lag_seconds_bucket", 'le="0.02"'
            )
            before_all = metric_value(metrics_client, stack.base, "tubeflow_event_loop_lag_seconds_count")

            def sample() -> None:
                nonlocal peak, max_lag
                with httpx.Client(timeout=10) as client:
                    while not stop.is_set():
                        peak = max(peak, sum(rss_mib(pid) for pid in pids))
                        lag = metric_value(client, stack.base, "tubeflow_event_loop_lag_max_seconds")
                        max_lag = max(max_lag, lag)
                        time.sleep(0.25)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.perf_counter()
            with httpx.Client(timeout=30) as client:
                ids = [client.post(f"{stack.base}/api/jobs", json={"url": url}).json()["id"] for url in urls]
            views = wait_all_finished(stack.base, ids)
            elapsed = time.perf_counter() - started
            stop.set()
            sampler.join()
            # The gauge is the maximum of the last 10 s, so one more read covers the end of the run.
            max_lag = max(max_lag, metric_value(metrics_client, stack.base, "tubeflow_event_loop_lag_max_seconds"))
            after_over = metric_value(metrics_client, stack.base, "tubeflow_event_loop_lag_seconds_bucket", 'le="0.02"')
            after_all = metric_value(metrics_client, stack.base, "tubeflow_event_loop_lag_seconds_count")
    return StackRun(
        elapsed=elapsed,
        completed=sum(v["status"] == "completed" for v in views.values()),
        idle_mib=idle,
        peak_mib=peak,
        max_loop_lag_ms=round(1000 * max_lag, 1),
        lag_over_20ms=int((after_all - before_all) - (after_over - before_over)),
    )


def run(quick: bool) -> Report:
    count = 4 if quick else 20
    report = Report("throughput")
    with nats_server() as nats, media_server() as media:
        names = [media.fresh("clip.mp4") for _ in range(count)]
        baseline_names = [media.fresh("clip.mp4") for _ in range(count)]
        baseline = bare_ytdlp([media.url(n) for n in baseline_names])
        result = run_stack(nats, [media.url(n) for n in names])
    report.add(
        what=f"{count} downloads, concurrency {CONCURRENCY}",
        tubeflow_s=round(result.elapsed, 3),
        baseline_s=round(baseline, 3),
        ratio=round(result.elapsed / baseline, 2),
        completed=result.completed,
        target="<= 1.5",
    )
    report.add(
        what="memory: stack incl. nats-server",
        idle_mib=round(result.idle_mib, 1),
        peak_mib=round(result.peak_mib, 1),
        target="idle <= 200, peak <= 350",
    )
    report.add(
        what="API event-loop lag during the run",
        max_ms=result.max_loop_lag_ms,
        wakeups_over_20ms=result.lag_over_20ms,
        target="max <= 20 ms",
    )
    report.notes.append("baseline: bare yt-dlp Python API, 3 threads, one reused YoutubeDL each, same kind of files")
    report.notes.append("loop lag: the API's own monitor (a 20 ms timer, how late it wakes), read from /metrics")
    return report
