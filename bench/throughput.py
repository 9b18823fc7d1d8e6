"""Throughput: N distinct local URLs, concurrency 3, first POST -> last completed through `tubeflow up`, against bare
yt-dlp (3 threads, one reused YoutubeDL each) downloading the same files. Also the stack's memory and the largest
event-loop lag of the API process during the run (`tubeflow up` runs every service on that loop)."""

from __future__ import annotations

import hashlib
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import imageio_ffmpeg
import yt_dlp

from bench.harness import (
    FinishedJobs,
    Processes,
    Report,
    media_server,
    metrics_snapshot,
    nats_server,
    pss_mib,
    rss_mib,
    tubeflow,
)
from services.runtime.embedded import EmbeddedNats

CONCURRENCY = 3


class BareYtDlp:
    """The baseline: bare yt-dlp's Python API, ``threads`` threads with one reused YoutubeDL each, warmed up first
    (instances made, one download each), as a long-running program using yt-dlp would be."""

    def __init__(self, threads: int = CONCURRENCY, metadata: bool = False) -> None:
        self.out = Path(tempfile.mkdtemp(prefix="bench-bare-"))
        self.pool = ThreadPoolExecutor(threads)
        self.local = threading.local()
        self.threads = threads
        # yt-dlp --embed-metadata --embed-chapters: what a tubeflow job does by default (`metadata: true`).
        self.postprocessors = (
            [{"key": "FFmpegMetadata", "add_chapters": True, "add_metadata": True}] if metadata else []
        )

    def fetch(self, url: str) -> None:
        if not hasattr(self.local, "ydl"):
            self.local.ydl = yt_dlp.YoutubeDL(
                {
                    "quiet": True,
                    "no_warnings": True,
                    "noprogress": True,
                    "outtmpl": "%(id)s.%(ext)s",  # under the download's own folder (paths.home, below)
                    # The same ffmpeg tubeflow uses, for merging split streams.
                    "ffmpeg_location": imageio_ffmpeg.get_ffmpeg_exe(),
                    "postprocessors": self.postprocessors,
                }
            )
        # Every manifest is called "manifest": a folder of its own per download, as tubeflow gives each job.
        self.local.ydl.params["paths"] = {"home": str(self.out / hashlib.sha1(url.encode()).hexdigest()[:16])}
        self.local.ydl.download([url])

    def warm_up(self, urls: list[str]) -> None:
        barrier = threading.Barrier(self.threads)

        def one(url: str) -> None:
            barrier.wait()  # every thread takes one, so every thread makes its YoutubeDL now
            self.fetch(url)

        list(self.pool.map(one, urls[: self.threads]))

    def run(self, urls: list[str]) -> float:
        started = time.perf_counter()
        list(self.pool.map(self.fetch, urls))
        return time.perf_counter() - started

    def close(self) -> None:
        self.pool.shutdown()
        shutil.rmtree(self.out, ignore_errors=True)


LAG_MAX = "tubeflow_event_loop_lag_max_seconds"
LAG_COUNT = "tubeflow_event_loop_lag_seconds_count"
LAG_UNDER_20MS = 'tubeflow_event_loop_lag_seconds_bucket{le="0.02"}'


@dataclass
class Round:
    elapsed: float
    completed: int
    peak_mib: float
    peak_pss_mib: float
    max_loop_lag_ms: float
    lag_over_20ms: int


class Stack:
    """A running `tubeflow up`, warmed up with one job, whose rounds are timed first POST -> last completed."""

    def __init__(self, nats: EmbeddedNats, stack: Processes, warm_up_url: str) -> None:
        self.pids = [*stack.pids, nats.process.pid]  # type: ignore[union-attr]
        self.base = stack.base
        self.http = httpx.Client(timeout=30)
        time.sleep(1.0)
        self.idle_mib = self.rss()
        self.idle_pss_mib = self.pss()
        self.finished = FinishedJobs(self.base)
        self.finished.wait([self.post(warm_up_url)])

    def rss(self) -> float:
        return sum(rss_mib(pid) for pid in self.pids)

    def pss(self) -> float:
        return sum(pss_mib(pid) for pid in self.pids)

    def post(self, url: str, **fields: object) -> str:
        return self.http.post(f"{self.base}/api/jobs", json={"url": url, **fields}).json()["id"]

    def measure(self, urls: list[str], **fields: object) -> Round:
        peak, peak_pss, max_lag = self.rss(), self.pss(), 0.0
        stop = threading.Event()
        before = metrics_snapshot(self.http, self.base)

        def sample() -> None:
            nonlocal peak, peak_pss, max_lag
            with httpx.Client(timeout=10) as client:
                while not stop.is_set():
                    peak = max(peak, self.rss())
                    peak_pss = max(peak_pss, self.pss())
                    max_lag = max(max_lag, metrics_snapshot(client, self.base).get(LAG_MAX, 0.0))
                    time.sleep(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        ids = [self.post(url, **fields) for url in urls]
        views = self.finished.wait(ids)
        elapsed = time.perf_counter() - started
        stop.set()
        sampler.join()
        # The gauge is the maximum of the last 10 s, so one more read covers the end of the round; the histogram's
        # difference is the round's own distribution.
        after = metrics_snapshot(self.http, self.base)
        over = (after[LAG_COUNT] - before[LAG_COUNT]) - (after[LAG_UNDER_20MS] - before[LAG_UNDER_20MS])
        return Round(
            elapsed=elapsed,
            completed=sum(v["status"] == "completed" for v in views.values()),
            peak_mib=peak,
            peak_pss_mib=peak_pss,
            max_loop_lag_ms=round(1000 * max(max_lag, after.get(LAG_MAX, 0.0)), 1),
            lag_over_20ms=int(over),
        )


@contextmanager
def running_stack(nats: EmbeddedNats, warm_up_url: str, checkout: Path | None = None) -> Iterator[Stack]:
    with tubeflow(nats.url, ["up"], {"TUBEFLOW_DOWNLOAD_CONCURRENCY": str(CONCURRENCY)}, checkout) as processes:
        stack = Stack(nats, processes, warm_up_url)
        try:
            yield stack
        finally:
            stack.finished.close()
            stack.http.close()


def _add_rounds(
    report: Report,
    count: int,
    results: list[tuple[float, Round]],
    embedded: list[tuple[float, Round]],
    split: list[tuple[float, Round]],
    split_count: int,
) -> None:
    """The rounds' rows: each plain round, the medians, what the metadata default costs, the split streams."""
    for n, (baseline, result) in enumerate(results, start=1):
        report.add(
            what=f"round {n}: {count} downloads, concurrency {CONCURRENCY}, metadata: false vs yt-dlp's defaults",
            tubeflow_s=round(result.elapsed, 3),
            baseline_s=round(baseline, 3),
            ratio=round(result.elapsed / baseline, 2),
            completed=result.completed,
        )
    ratios = sorted(result.elapsed / baseline for baseline, result in results)
    report.add(
        what="median ratio (metadata: false vs yt-dlp's defaults)",
        ratio=round(statistics.median(ratios), 2),
        target="<= 1.5",
    )
    meta_ratios = [result.elapsed / baseline for baseline, result in embedded]
    report.add(
        what="median ratio (default job, metadata embedded, vs yt-dlp --embed-metadata)",
        tubeflow_s=round(statistics.median(r.elapsed for _, r in embedded), 3),
        baseline_s=round(statistics.median(b for b, _ in embedded), 3),
        ratio=round(statistics.median(meta_ratios), 2),
        completed=min(r.completed for _, r in embedded),
    )
    report.add(
        what="what the metadata default costs: default job / metadata: false (median of rounds)",
        ratio=round(
            statistics.median(m.elapsed / r.elapsed for (_, r), (_, m) in zip(results, embedded, strict=True)), 2
        ),
    )
    split_ratios = [result.elapsed / baseline for baseline, result in split]
    report.add(
        what=f"DASH video+audio, merged, metadata embedded: {split_count} downloads x {len(split)} rounds (median)",
        tubeflow_s=round(statistics.median(r.elapsed for _, r in split), 3),
        baseline_s=round(statistics.median(b for b, _ in split), 3),
        ratio=round(statistics.median(split_ratios), 2),
        completed=min(r.completed for _, r in split),
    )


def run(quick: bool) -> Report:
    count = 4 if quick else 20
    rounds = 1 if quick else 5
    report = Report("throughput")
    # (baseline, tubeflow) per round: yt-dlp's defaults against `metadata: false` (the comparison of earlier runs),
    # and yt-dlp --embed-metadata against tubeflow's default (metadata embedded): the same work on both sides.
    results: list[tuple[float, Round]] = []
    embedded: list[tuple[float, Round]] = []
    split: list[tuple[float, Round]] = []
    split_count = 2 if quick else 6
    with nats_server() as nats, media_server() as media:
        bare, bare_meta = BareYtDlp(), BareYtDlp(metadata=True)
        for side in (bare, bare_meta):
            side.warm_up([media.url(media.fresh("clip.mp4")) for _ in range(CONCURRENCY)])

        def fresh() -> list[str]:
            return [media.url(media.fresh("clip.mp4")) for _ in range(count)]

        with running_stack(nats, media.url(media.fresh("clip.mp4"))) as stack:
            for _ in range(rounds):
                # Alternate: both sides see the same machine state; every URL is new to both (no reuse).
                baseline = bare.run(fresh())
                results.append((baseline, stack.measure(fresh(), metadata=False)))
                baseline = bare_meta.run(fresh())
                embedded.append((baseline, stack.measure(fresh())))
            for _ in range(rounds):
                # Video and audio apart (DASH, 1 s segments), downloaded one after the other and merged by ffmpeg.
                baseline = bare_meta.run([media.fresh_stream("dash", "manifest.mpd") for _ in range(split_count)])
                urls = [media.fresh_stream("dash", "manifest.mpd") for _ in range(split_count)]
                split.append((baseline, stack.measure(urls)))
            idle, idle_pss = stack.idle_mib, stack.idle_pss_mib
        bare.close()
        bare_meta.close()
    _add_rounds(report, count, results, embedded, split, split_count)
    report.add(
        what="memory: stack incl. nats-server and slot processes (RSS)",
        idle_mib=round(idle, 1),
        peak_mib=round(max(r.peak_mib for _, r in results + embedded), 1),
        target="idle <= 200, peak <= 350",
    )
    report.add(
        what="memory: the same, PSS (shared pages of forked slots split)",
        idle_mib=round(idle_pss, 1),
        peak_mib=round(max(r.peak_pss_mib for _, r in results), 1),
    )
    report.add(
        what="API event-loop lag during the rounds",
        max_ms=max(r.max_loop_lag_ms for _, r in results),
        wakeups_over_20ms=sum(r.lag_over_20ms for _, r in results),
        target="max <= 20 ms",
    )
    report.notes.append(
        "baseline: bare yt-dlp Python API, 3 threads, one reused YoutubeDL each; both sides warmed up first"
    )
    report.notes.append("loop lag: the API's own monitor (a 20 ms timer, how late it wakes), read from /metrics")
    return report
