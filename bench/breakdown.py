"""Where a single-video job's time goes, beside a playlist item's, from the events' timestamps (issue 25).

One `tubeflow up`, small clips (~0.3 MB), `metadata: false`. Single-video jobs are sent one at a time (each alone on
the stack, so every stage is its own latency); then one playlist job of as many entries. For each stage the median
over jobs (or items), in milliseconds:

- accept: the POST sent -> `requested` (the API's clock: same machine)
- resolve hop: `requested` -> `resolve.started` (the downloader hears of the job)
- resolve: `resolve.started` -> `resolved` (yt-dlp's extraction in a slot)
- queue: `resolved` -> `item.queued`
- ticket: `item.queued` -> `download.started` (the item's ticket taken, the site gate, the disk check)
- download: `download.started` -> `download.completed` (the transfer, post-processing, the file's identity)
- seen: `download.completed` -> the terminal view seen on `GET /api/jobs/stream` (projection, fold, SSE)

Also the requests the media server saw for each item's file, against bare yt-dlp's for the same kind of file (its
Python API extracting and downloading one URL), and bare yt-dlp's time per clip (sequential, a warm YoutubeDL).

Then side by side, alternating rounds, each against bare yt-dlp doing the same work with the same concurrency (3
threads, a warm YoutubeDL each): 20 single-video jobs sent at once, without metadata and with it (bare yt-dlp with its
FFmpegMetadata post-processor), a batch of 100 URLs (`POST /api/jobs/batch`, one job each) and one playlist job of
1,000 entries (bare yt-dlp downloads the same entries' URLs); first POST to the last job seen finished."""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import yt_dlp

from bench.harness import FinishedJobs, Report, media_server, nats_server, tubeflow
from bench.throughput import BareYtDlp
from tests.support.media import make_clip

STAGES = (
    ("accept", "post", "requested"),
    ("resolve hop", "requested", "resolve.started"),
    ("resolve", "resolve.started", "resolved"),
    ("queue", "resolved", "item.queued"),
    ("ticket", "item.queued", "download.started"),
    ("download", "download.started", "download.completed"),
    ("seen", "download.completed", "seen"),
)
ITEM_STAGES = STAGES[4:]


def instants(client: httpx.Client, base: str, job_id: str) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The first instant of each event type of the job, and per item."""
    job: dict[str, float] = {}
    items: dict[str, dict[str, float]] = {}
    for event in client.get(f"{base}/api/jobs/{job_id}/events", params={"limit": 5000}).json():
        when = datetime.fromisoformat(event["occurred_at"]).timestamp()
        job.setdefault(event["type"], when)
        if event.get("item_id"):
            items.setdefault(event["item_id"], {}).setdefault(event["type"], when)
    return job, items


def stage_ms(marks: dict[str, float], stages) -> dict[str, float]:  # noqa: ANN001
    return {name: (marks[end] - marks[start]) * 1000 for name, start, end in stages if start in marks and end in marks}


def bare_per_clip(urls: list[str]) -> float:
    out = Path(tempfile.mkdtemp(prefix="bench-bare-"))
    ydl = yt_dlp.YoutubeDL(
        {
            "quiet": True,
            "no_warnings": True,
            "noprogress": True,
            "outtmpl": "%(id)s.%(ext)s",
            "paths": {"home": str(out)},
        }
    )
    ydl.extract_info(urls[0], download=True)  # warm
    started = time.perf_counter()
    for url in urls[1:]:
        ydl.extract_info(url, download=True)
    return (time.perf_counter() - started) / (len(urls) - 1)


def run(quick: bool) -> Report:
    count = 5 if quick else 20
    report = Report("breakdown")
    with nats_server() as nats, media_server() as media:
        make_clip(media.root / "small.mp4", seconds=10, size="640x360", bitrate="200k")
        size = (media.root / "small.mp4").stat().st_size
        with tubeflow(nats.url, ["up"]) as stack, httpx.Client(timeout=30) as client:
            finished = FinishedJobs(stack.base)
            try:
                for _ in range(3):  # warm: slots started, pooled YoutubeDLs made
                    warm = client.post(f"{stack.base}/api/jobs", json={"url": media.url(media.fresh("small.mp4"))})
                    finished.wait([warm.json()["id"]], timeout=60)
                singles: list[dict[str, float]] = []
                requests_per_item: list[int] = []
                for _ in range(count):
                    name = media.fresh("small.mp4")
                    posted = time.time()
                    job_id = client.post(
                        f"{stack.base}/api/jobs", json={"url": media.url(name), "metadata": False}
                    ).json()["id"]
                    finished.wait([job_id], timeout=60)
                    seen = time.time()
                    marks, _ = instants(client, stack.base, job_id)
                    singles.append(stage_ms({**marks, "post": posted, "seen": seen}, STAGES))
                    requests_per_item.append(sum(path.endswith(f"/{name}") for path in media.requests))
                names = [media.fresh("small.mp4") for _ in range(count)]
                job_id = client.post(
                    f"{stack.base}/api/jobs", json={"url": media.feed_url(",".join(names)), "metadata": False}
                ).json()["id"]
                finished.wait([job_id], timeout=300)
                seen = time.time()
                _, items = instants(client, stack.base, job_id)
                playlist = [stage_ms({**marks, "seen": seen}, ITEM_STAGES[:-1]) for marks in items.values()]
                playlist_requests = [sum(path.endswith(f"/{n}") for path in media.requests) for n in names]
            finally:
                finished.close()
        bare_names = [media.fresh("small.mp4") for _ in range(count + 1)]
        before = len(media.requests)
        bare = bare_per_clip([media.url(n) for n in bare_names])
        bare_requests = [sum(p.endswith(f"/{n}") for p in media.requests[before:]) for n in bare_names[1:]]
    side = side_by_side(quick)
    total_single = statistics.median(sum(s.values()) for s in singles)
    for name, _, _ in STAGES:
        single = [s[name] for s in singles if name in s]
        items_of = [p[name] for p in playlist if name in p]
        report.add(
            stage=name,
            single_ms=round(statistics.median(single), 1) if single else "",
            playlist_item_ms=round(statistics.median(items_of), 1) if items_of else "",
        )
    report.add(stage="single job, POST to seen (sum of medians' jobs)", single_ms=round(total_single, 1))
    report.add(stage="bare yt-dlp per clip (extract + download, sequential)", single_ms=round(bare * 1000, 1))
    report.add(
        stage="requests per item's file (median)",
        single_ms=statistics.median(requests_per_item),
        playlist_item_ms=statistics.median(playlist_requests),
        bare=statistics.median(bare_requests),
    )
    for name, rows in side.items():
        ratios = [t / b for t, b in rows]
        report.add(
            stage=f"side by side: {name} (median of {len(rows)} rounds)",
            single_ms=round(statistics.median(t for t, _ in rows) * 1000, 1),
            bare=round(statistics.median(b for _, b in rows) * 1000, 1),
            ratio=round(statistics.median(ratios), 2),
            rounds=", ".join(f"{r:.2f}" for r in ratios),
        )
    report.notes.append(f"{count} single-video jobs one at a time, then one {count}-entry playlist; clip {size} bytes")
    return report


def side_by_side(quick: bool) -> dict[str, list[tuple[float, float]]]:
    """(tubeflow seconds, bare seconds) per round, alternating, for the same work on both sides: single-video jobs
    sent at once (without metadata against bare yt-dlp's defaults; with it, tubeflow's default, against yt-dlp with
    its FFmpegMetadata post-processor), a batch, and one playlist job against its entries' URLs."""
    rounds, singles, batch, playlist = (1, 5, 10, 10) if quick else (5, 20, 100, 1000)
    names = {
        "plain": f"{singles} single-video jobs, metadata: false",
        "metadata": f"{singles} single-video jobs, metadata: true (bare: FFmpegMetadata)",
        "batch": f"batch of {batch}",
        "playlist": f"playlist of {playlist}",
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in names.values()}
    with nats_server() as nats, media_server() as media:
        make_clip(media.root / "small.mp4", seconds=10, size="640x360", bitrate="200k")
        bare = BareYtDlp()
        bare.warm_up([media.url(media.fresh("small.mp4")) for _ in range(3)])
        bare_metadata = BareYtDlp(metadata=True)
        bare_metadata.warm_up([media.url(media.fresh("small.mp4")) for _ in range(3)])
        with tubeflow(nats.url, ["up"]) as stack, httpx.Client(timeout=60) as client:
            finished = FinishedJobs(stack.base)

            def jobs(urls: list[str], metadata: bool) -> float:
                return finished.post_all(urls, metadata=metadata)[0]

            def fresh(count: int) -> list[str]:
                return [media.url(media.fresh("small.mp4")) for _ in range(count)]

            try:
                jobs(fresh(3), True)  # warm: slots started, pooled YoutubeDLs made
                for _ in range(rounds):
                    results[names["plain"]].append((jobs(fresh(singles), False), bare.run(fresh(singles))))
                    results[names["metadata"]].append((jobs(fresh(singles), True), bare_metadata.run(fresh(singles))))
                    urls = fresh(batch)
                    started = time.perf_counter()
                    made = client.post(f"{stack.base}/api/jobs/batch", json={"urls": urls, "metadata": False}).json()
                    finished.wait([job["id"] for job in made["jobs"]], timeout=600)
                    ours = time.perf_counter() - started
                    results[names["batch"]].append((ours, bare.run(fresh(batch))))
                    # A feed of N entries of one file, each its own URL (?n=k); a fresh file per round.
                    name = media.fresh("small.mp4")
                    started = time.perf_counter()
                    job = client.post(
                        f"{stack.base}/api/jobs",
                        json={"url": f"{media.base}/feed.xml?count={playlist}&name={name}", "metadata": False},
                    ).json()
                    finished.wait([job["id"]], timeout=1800)
                    ours = time.perf_counter() - started
                    other = media.fresh("small.mp4")
                    theirs = bare.run([f"{media.url(other)}?n={k}" for k in range(1, playlist + 1)])
                    results[names["playlist"]].append((ours, theirs))
            finally:
                finished.close()
                bare.close()
                bare_metadata.close()
    return results
