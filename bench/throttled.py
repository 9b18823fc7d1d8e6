"""Throttled throughput: the throughput run with every connection limited to 500 KB/s by the media server, against
the ideal: with N files over C slots, the busiest slot moves ceil(N / C) files at the rate, so ideal =
ceil(N / C) * size / rate (the issue's reference: 20 files of 1.47 MB at 500 KB/s, concurrency 3 -> 20.65 s).

The download schedule's cost (issue 29), rounds alternating in one run: no schedule, a schedule whose budget is never
reached (every block of every download then asks for its share and paces; ``rate`` 1G), and with BENCH_BEFORE=REV
the same without the schedule at all (a worktree of that revision, run by the same interpreter)."""

from __future__ import annotations

import math
import os
import shutil
import statistics
import subprocess
import tempfile
from contextlib import ExitStack
from pathlib import Path

from bench.harness import Report, media_server, nats_server
from bench.throughput import CONCURRENCY, running_stack

RATE = 500_000
ROOT = Path(__file__).resolve().parents[1]


def run(quick: bool) -> Report:
    count = 3 if quick else 20
    rate = 4 * RATE if quick else RATE
    report = Report("throttled")
    before = os.environ.get("BENCH_BEFORE")
    with ExitStack() as stack_of, media_server() as media:
        size = (media.root / "clip.mp4").stat().st_size
        warm = media.url(media.fresh("clip.mp4"))
        stack = stack_of.enter_context(running_stack(stack_of.enter_context(nats_server()), warm))
        result = stack.measure([media.url(media.fresh("clip.mp4"), rate=rate) for _ in range(count)])
        ideal = math.ceil(count / CONCURRENCY) * size / rate
        report.add(
            what=f"{count} downloads of {size / 1e6:.2f} MB at {rate // 1000} KB/s per connection, concurrency "
            f"{CONCURRENCY}",
            tubeflow_s=round(result.elapsed, 3),
            ideal_s=round(ideal, 3),
            over_ideal_pct=round(100 * (result.elapsed / ideal - 1), 1),
            completed=result.completed,
            target="within 3 %",
        )
        report.add(
            what="API event-loop lag during the run",
            max_ms=result.max_loop_lag_ms,
            wakeups_over_20ms=result.lag_over_20ms,
            peak_mib=round(result.peak_mib, 1),
        )
        stacks = {"no schedule": stack}
        if before:
            checkout = Path(tempfile.mkdtemp(prefix="bench-before-")) / "checkout"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(checkout), before], check=True)
            stack_of.callback(shutil.rmtree, checkout.parent, ignore_errors=True)
            stack_of.callback(subprocess.run, ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(checkout)])
            stacks[f"before ({before})"] = stack_of.enter_context(
                running_stack(stack_of.enter_context(nats_server()), media.url(media.fresh("clip.mp4")), checkout)
            )
        stacks["schedule, budget never reached"] = stack
        times: dict[str, list[float]] = {label: [] for label in stacks}
        for n in range(1 if quick else 3):
            labels = list(stacks) if n % 2 == 0 else list(reversed(stacks))
            for label in labels:
                current = stacks[label]
                if label.startswith("schedule"):
                    current.http.put(f"{current.base}/api/queue/schedule", json={"rate": "1G"}).raise_for_status()
                elif label == "no schedule":
                    current.http.delete(f"{current.base}/api/queue/schedule").raise_for_status()
                urls = [media.url(media.fresh("clip.mp4"), rate=rate) for _ in range(count)]
                times[label].append(current.measure(urls).elapsed)
    base = statistics.median(times["no schedule"])
    for label, elapsed in times.items():
        report.add(
            what=f"{count} throttled downloads, {label}",
            median_s=round(statistics.median(elapsed), 3),
            rounds=len(elapsed),
            ratio_to_no_schedule=round(statistics.median(elapsed) / base, 3),
        )
    report.notes.append("schedule rounds alternate with the others in one run, on the same machine and media server")
    return report
