"""Slot start-up: what a downloader pays before its first yt-dlp call — the zygote (imports yt-dlp and
tubeflow's adapter, compiles the extractors' patterns, makes a YoutubeDL once) and a slot forked from it, then a
second slot, the first download in a fresh slot, and what the processes hold (PSS). The baseline, in the same run:
a fresh Python that imports yt-dlp and makes one YoutubeDL (what any yt-dlp program pays once).

Issue 24 added imports every slot pays (curl_cffi, Deno's and the solver's modules, the PO-token plugin, brotli,
websockets): this is where their cost shows (docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import Report, media_server, process_tree, pss_mib

try:  # the engine's package since issue 24; before it, the downloader's (so a worktree of an older commit runs this)
    from services.engine.slots import SlotConfig, SlotPool
except ImportError:  # pragma: no cover - older commits
    from services.downloader.slots import SlotConfig, SlotPool  # type: ignore[no-redef]
from services.runtime.addresses import AddressPolicy

BARE = "import yt_dlp; yt_dlp.YoutubeDL({'quiet': True})"


def bare_start() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", BARE], check=True)
    return time.perf_counter() - started


def measured_round(clip_url: str) -> dict:
    """One round in a fresh Python (the zygote is one per process: a round in this one would find it started)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.slots", clip_url], check=True, capture_output=True, text=True, timeout=300
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def one_round(clip_url: str) -> dict:
    pool = SlotPool(2, SlotConfig(policy=AddressPolicy(allow_private=True)), download_timeout=120)
    try:
        started = time.perf_counter()
        pool.warm_up(1)
        first = time.perf_counter() - started
        started = time.perf_counter()
        pool.warm_up(2)
        second = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as directory:
            started = time.perf_counter()
            pool.download(clip_url, directory=Path(directory), stem="0001", format=None, hook=lambda d: None)
            download = time.perf_counter() - started
        children = [pid for pid in process_tree(os.getpid()) if pid != os.getpid()]
        slots = {pid for pid in (slot.pid for slot in pool._slots) if pid}
        pss = {
            "slots": round(sum(pss_mib(pid) for pid in slots), 1),
            "zygote": round(sum(pss_mib(pid) for pid in children if pid not in slots), 1),
        }
        return {"first": first, "second": second, "download": download, "pss": pss}
    finally:
        pool.close()


def run(quick: bool) -> Report:
    rounds = 2 if quick else 5
    report = Report("slots")
    with media_server() as media:
        bare = [bare_start() for _ in range(rounds)]
        results = [measured_round(media.url(media.fresh("clip.mp4"))) for _ in range(rounds)]
    base = statistics.median(bare)
    for name, label in (
        ("first", "zygote + first slot ready"),
        ("second", "a second slot ready"),
        ("download", "first download in a fresh slot"),
    ):
        seconds = statistics.median(r[name] for r in results)
        report.add(what=label, median_s=round(seconds, 3), ratio_to_bare_start=round(seconds / base, 2))
    report.add(what="bare: python, import yt_dlp, one YoutubeDL", median_s=round(base, 3), ratio_to_bare_start=1.0)
    for part in ("slots", "zygote"):
        report.add(
            what=f"PSS MiB after the download: {part}",
            median_s="",
            pss_mib=statistics.median(r["pss"][part] for r in results),
        )
    return report


if __name__ == "__main__":
    print(json.dumps(one_round(sys.argv[1])))
