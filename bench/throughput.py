"""Throughput: N distinct local URLs, unthrottled, concurrency 3, first POST -> last completed through `tubeflow up`,
against bare yt-dlp (3 threads, one reused YoutubeDL each) downloading the same files. Also the stack's memory."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import yt_dlp

from bench.harness import Report, media_server, nats_server, rss_mib, tubeflow, wait_all_finished


def bare_ytdlp(urls: list[str], threads: int = 3) -> float:
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


def run(quick: bool) -> Report:
    count = 4 if quick else 20
    report = Report("throughput")
    with nats_server() as nats, media_server() as media:
        names = [media.fresh("clip.mp4") for _ in range(count)]
        baseline_names = [media.fresh("clip.mp4") for _ in range(count)]
        baseline = bare_ytdlp([media.url(n) for n in baseline_names])
        with tubeflow(nats.url, ["up"], {"TUBEFLOW_DOWNLOAD_CONCURRENCY": "3"}) as stack:
            pids = [*stack.pids, nats.process.pid]  # type: ignore[union-attr]
            time.sleep(1.0)
            idle = sum(rss_mib(pid) for pid in pids)
            peak = idle
            stop = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not stop.is_set():
                    peak = max(peak, sum(rss_mib(pid) for pid in pids))
                    time.sleep(0.1)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.perf_counter()
            with httpx.Client(timeout=30) as client:
                ids = [client.post(f"{stack.base}/api/jobs", json={"url": media.url(n)}).json()["id"] for n in names]
            views = wait_all_finished(stack.base, ids)
            elapsed = time.perf_counter() - started
            stop.set()
            sampler.join()
        ok = sum(v["status"] == "completed" for v in views.values())
    report.add(
        what=f"{count} downloads, concurrency 3",
        tubeflow_s=round(elapsed, 3),
        baseline_s=round(baseline, 3),
        ratio=round(elapsed / baseline, 2),
        completed=ok,
        target="<= 1.5",
    )
    report.add(
        what="memory: stack incl. nats-server",
        idle_mib=round(idle, 1),
        peak_mib=round(peak, 1),
        target="idle <= 200, peak <= 350",
    )
    report.notes.append("baseline: bare yt-dlp Python API, 3 threads, one reused YoutubeDL each, same kind of files")
    return report
