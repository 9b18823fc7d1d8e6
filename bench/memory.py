"""Memory (issue 25): the PSS of `tubeflow up`'s whole process tree (every service, the zygote and slot processes, the
embedded NATS server) idle, while 20 small clips download at the default concurrency (3), and while 50 throttled
downloads run at once (`TUBEFLOW_DOWNLOAD_CONCURRENCY=50`: peak PSS, processes, wall time against the ideal).

The baseline, in the same run: bare yt-dlp as a program of its own (one process, 3 threads with a YoutubeDL each)
downloading 20 clips of the same kind, its peak PSS — what any tool built on yt-dlp holds at least."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

from bench.harness import FinishedJobs, Report, media_server, process_tree, pss_mib, tubeflow
from tests.support.media import make_clip
from tests.support.processes import processes_mentioning

BARE = """
import sys, tempfile, threading, yt_dlp
from concurrent.futures import ThreadPoolExecutor
threads, urls = int(sys.argv[1]), sys.argv[2:]
local = threading.local()
out = tempfile.mkdtemp(prefix="bench-bare-")
yt_dlp.YoutubeDL({"quiet": True})  # plugins loaded once, before the threads (loading them at once registers twice)
def fetch(url):
    if not hasattr(local, "ydl"):
        local.ydl = yt_dlp.YoutubeDL({"quiet": True, "noprogress": True, "paths": {"home": out},
                                      "outtmpl": "%(id)s.%(ext)s"})
    local.ydl.download([url])
with ThreadPoolExecutor(threads) as pool:
    list(pool.map(fetch, urls))
"""


class PeakPss:
    """The largest PSS of a process tree, sampled every 0.1 s on a thread, and the most processes seen in it."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.processes = pid, 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, pss_mib(self.pid))
            self.processes = max(self.processes, len(process_tree(self.pid)))
            time.sleep(0.1)

    def __enter__(self) -> "PeakPss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def bare_peak(urls: list[str], threads: int = 3) -> float:
    return bare_run(urls, threads)[0]


def bare_run(urls: list[str], threads: int) -> tuple[float, float]:
    """Bare yt-dlp downloading ``urls`` on ``threads`` threads: its peak PSS and its wall time."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", BARE, str(threads), *urls])
    with PeakPss(process.pid) as peak:
        process.wait(timeout=300)
    return peak.peak, time.perf_counter() - started


def run_jobs(finished: FinishedJobs, urls: list[str]) -> tuple[float, int]:
    """Every URL sent at once (without metadata); the time to the last finished, and how many completed."""
    elapsed, views = finished.post_all(urls, metadata=False)
    return elapsed, sum(v["status"] == "completed" for v in views.values())


@dataclass
class Measured:
    idle: float
    peak: float
    processes: int
    elapsed: float
    completed: int


def measured(warm_url: str, urls: list[str], env: dict[str, str] | None = None) -> Measured:
    """A fresh `tubeflow up`: one job to warm it, its idle PSS, then ``urls`` sent at once under a PSS sampler."""
    with tubeflow("", ["up"], env) as stack:
        up = stack.processes[0].pid
        finished = FinishedJobs(stack.base)
        try:
            assert run_jobs(finished, [warm_url])[1] == 1, "the warm-up job did not complete"
            time.sleep(1.0)
            idle = pss_mib(up)
            with PeakPss(up) as peak:
                elapsed, completed = run_jobs(finished, urls)
        finally:
            finished.close()
    return Measured(idle, peak.peak, peak.processes, elapsed, completed)


def zygotes(pid: int) -> list[int]:
    """The zygote and slot processes in a tree (they share the zygote's command line)."""
    return sorted(set(process_tree(pid)) & set(processes_mentioning("services.engine.zygote")))


def idle_without_yt_dlp(fresh: Callable[[], str], idle_seconds: int) -> tuple[float, float, float]:
    """A fresh `tubeflow up` whose idle slots and zygote end after ``idle_seconds``: one job to warm it; one more,
    timed (warm); its PSS once no zygote or slot is left; one more job, timed (it starts a zygote and a slot)."""
    with tubeflow("", ["up"], {"TUBEFLOW_SLOT_IDLE_SECONDS": str(idle_seconds)}) as stack:
        up = stack.processes[0].pid
        finished = FinishedJobs(stack.base)
        try:
            assert run_jobs(finished, [fresh()])[1] == 1, "the warm-up job failed"
            warm, done = run_jobs(finished, [fresh()])
            deadline = time.monotonic() + idle_seconds * 3 + 30
            while zygotes(up):
                assert time.monotonic() < deadline, "the idle slots and zygote did not end"
                time.sleep(0.5)
            time.sleep(1.0)
            idle = pss_mib(up)
            cold, done_cold = run_jobs(finished, [fresh()])
            assert done == done_cold == 1, "a timed job did not complete"
        finally:
            finished.close()
    return idle, warm, cold


def run(quick: bool) -> Report:
    count = 6 if quick else 20
    many = 10 if quick else 50
    report = Report("memory")
    with media_server() as media:
        make_clip(media.root / "small.mp4", seconds=10, size="640x360", bitrate="200k")
        bare = bare_peak([media.url(media.fresh("small.mp4")) for _ in range(count)])
        report.add(what=f"bare yt-dlp, {count} small clips, 3 threads: peak PSS", pss_mib=round(bare, 1), ratio=1.0)
        small = measured(
            media.url(media.fresh("small.mp4")), [media.url(media.fresh("small.mp4")) for _ in range(count)]
        )
        report.add(what="tubeflow up, idle after one job", pss_mib=small.idle, ratio=round(small.idle / bare, 2))
        report.add(
            what=f"tubeflow up, {count} small clips, concurrency 3: peak PSS",
            pss_mib=small.peak,
            ratio=round(small.peak / bare, 2),
            processes=small.processes,
            completed=small.completed,
        )
        idle, warm, cold = idle_without_yt_dlp(lambda: media.url(media.fresh("small.mp4")), 3)
        report.add(
            what="tubeflow up, idle once its slots and zygote ended (TUBEFLOW_SLOT_IDLE_SECONDS=3)",
            pss_mib=idle,
            ratio=round(idle / bare, 2),
        )
        report.add(what="… one small clip, POST to completed: warm slot", wall_s=round(warm, 3))
        report.add(what="… the same once they had ended (a new zygote and slot)", wall_s=round(cold, 3))
        size = (media.root / "clip.mp4").stat().st_size
        rate = size // (2 if quick else 8)  # each download takes 8 s alone
        throttled = measured(
            media.url(media.fresh("clip.mp4")),
            [media.url(media.fresh("clip.mp4"), rate=rate) for _ in range(many)],
            {"TUBEFLOW_DOWNLOAD_CONCURRENCY": str(many)},
        )
        ideal = size / rate
        bare_many_pss, bare_many = bare_run([media.url(media.fresh("clip.mp4"), rate=rate) for _ in range(many)], many)
        report.add(
            what=f"bare yt-dlp, the same {many} throttled downloads on {many} threads",
            pss_mib=round(bare_many_pss, 1),
            wall_s=round(bare_many, 2),
            ideal_s=round(ideal, 2),
            over_ideal_pct=round(100 * (bare_many / ideal - 1), 1),
        )
        report.add(
            what=f"tubeflow up, {many} throttled downloads at once (concurrency {many}): peak PSS",
            pss_mib=throttled.peak,
            ratio=round(throttled.peak / bare, 2),
            processes=throttled.processes,
            completed=throttled.completed,
            wall_s=round(throttled.elapsed, 2),
            ideal_s=round(ideal, 2),
            over_ideal_pct=round(100 * (throttled.elapsed / ideal - 1), 1),
            wall_ratio_to_bare=round(throttled.elapsed / bare_many, 2),
        )
    report.notes.append("PSS from /proc/<pid>/smaps_rollup over the process tree (shared pages split among sharers)")
    report.notes.append(
        f"processes: the most seen at once in the tree (ffmpeg included); python {sys.version.split()[0]}"
    )
    return report
