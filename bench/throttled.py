"""Throttled throughput: the throughput run with every connection limited to 500 KB/s by the media server, against
the ideal: with N files over C slots, the busiest slot moves ceil(N / C) files at the rate, so ideal =
ceil(N / C) * size / rate (the issue's reference: 20 files of 1.47 MB at 500 KB/s, concurrency 3 -> 20.65 s)."""

from __future__ import annotations

import math

from bench.harness import Report, media_server, nats_server
from bench.throughput import CONCURRENCY, running_stack

RATE = 500_000


def run(quick: bool) -> Report:
    count = 3 if quick else 20
    rate = 4 * RATE if quick else RATE
    report = Report("throttled")
    with nats_server() as nats, media_server() as media:
        size = (media.root / "clip.mp4").stat().st_size
        with running_stack(nats, media.url(media.fresh("clip.mp4"))) as stack:
            result = stack.measure([media.url(media.fresh("clip.mp4"), rate=rate) for _ in range(count)])
    ideal = math.ceil(count / CONCURRENCY) * size / rate
    report.add(
        what=f"{count} downloads of {size / 1e6:.2f} MB at {rate // 1000} KB/s per connection, concurrency {CONCURRENCY}",
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
    return report
