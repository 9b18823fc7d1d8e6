"""Projector speed: fold a backlog of events into read models (the real Projector writing to KV), against a raw
JetStream consume of the same backlog; the result must equal the event-by-event fold."""

from __future__ import annotations

import asyncio
import gc
import time
from datetime import datetime, timedelta, timezone

from nats.js import api

from bench.harness import Report, nats_server
from contracts import events as ev
from contracts.events import ALL_EVENTS
from contracts.fold import fold
from contracts.ids import item_id, new_job_id
from services.progress.main import run as run_projector
from services.progress.rebuild import rebuild
from services.runtime.metrics import EVENTS_FOLDED
from services.runtime.nats import (
    STREAM,
    EventPublisher,
    PullReader,
    connect,
    ensure_topology,
    iter_events,
    jobs_bucket,
)
from services.runtime.nats.read import BATCH
from services.runtime.nats.views import load
from services.runtime.settings import Settings
from tests.support.events import events_of

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def job_events(job: str, items: int) -> list[ev.Envelope]:
    out = [
        ("requested", ev.Requested(url="http://video.example.com/list", mode="both"), None),
        ("resolved", ev.Resolved(kind="playlist", item_count=items, worker="w"), None),
    ]
    for i in range(1, items + 1):
        iid = item_id(i)
        out += [
            ("item.queued", ev.ItemQueued(index=i, url="u", mode="both", audio_format="mp3"), iid),
            ("download.started", ev.DownloadStarted(worker="w"), iid),
        ]
        out += [
            ("download.progress", ev.DownloadProgress(worker="w", downloaded_bytes=b, total_bytes=1000), iid)
            for b in range(100, 1000, 100)
        ]
        out += [
            ("download.completed", ev.DownloadCompleted(worker="w", file="f", size=1000, audio_format="mp3"), iid),
            ("extract.started", ev.ExtractStarted(worker="w", audio_format="mp3"), iid),
            ("extract.completed", ev.ExtractCompleted(worker="w", file="f.mp3", size=10), iid),
        ]
    return events_of(job, out, start=T0, spacing=timedelta(milliseconds=1), numbered=True)


async def stored_views(js, jobs) -> dict[str, bytes]:  # noqa: ANN001
    """Each job's stored view, its summary and pages put together (``runtime.nats.views``)."""
    kv = await jobs_bucket(js)
    out = {}
    for job in jobs:
        stored = await load(kv, job)
        if stored is not None:
            out[job] = stored.json()
    return out


async def measure(url: str, total: int) -> dict:
    nc = await connect(url, "bench-projector")
    js = nc.jetstream()
    await ensure_topology(js)
    publisher = EventPublisher(js)
    published = 0
    while published < total:
        events = job_events(new_job_id(), 20)
        for start in range(0, len(events), 256):
            await asyncio.gather(*(publisher.publish(e) for e in events[start : start + 256]))
        published += len(events)

    started = time.perf_counter()
    fetch_count = await consume_fetch(js, BATCH)
    fetch_s = time.perf_counter() - started
    started = time.perf_counter()
    raw_count = await consume_raw(js, BATCH)
    raw_s = time.perf_counter() - started
    assert fetch_count == raw_count
    raw = [stored async for stored in iter_events(js, ALL_EVENTS, batch=BATCH)]
    assert raw_count == len(raw)
    by_job: dict[str, list] = {}
    for stored in raw:
        by_job.setdefault(stored.event.job_id, []).append(stored.event)
    expected = {job: fold(events).model_dump_json().encode() for job, events in by_job.items()}
    count, jobs = len(raw), len(by_job)
    # 100,000 decoded events held here would make every garbage collection in the projector below walk them.
    del raw, by_job
    gc.collect()

    # The live projector (`tubeflow service progress`'s loop) catching up on the backlog, from a fresh consumer.
    folded_before = EVENTS_FOLDED._value.get()
    stop = asyncio.Event()
    started = time.perf_counter()
    projector = asyncio.create_task(run_projector(Settings(nats_url=url, worker_name="bench", health_port=0), stop))
    while EVENTS_FOLDED._value.get() - folded_before < count:
        if projector.done():
            projector.result()
        await asyncio.sleep(0.002)
    live_s = time.perf_counter() - started
    stop.set()
    await projector
    live_identical = await stored_views(js, expected) == expected

    # `tubeflow rebuild`: drop the read models, fold the stream in memory, write each view once.
    started = time.perf_counter()
    await rebuild(js)
    rebuild_s = time.perf_counter() - started
    rebuild_identical = await stored_views(js, expected) == expected
    await nc.close()
    return {
        "events": count,
        "jobs": jobs,
        "raw_s": raw_s,
        "fetch_s": fetch_s,
        "live_s": live_s,
        "live_identical": live_identical,
        "rebuild_s": rebuild_s,
        "rebuild_identical": rebuild_identical,
    }


def raw_consumer() -> api.ConsumerConfig:
    return api.ConsumerConfig(
        ack_policy=api.AckPolicy.NONE,
        deliver_policy=api.DeliverPolicy.ALL,
        mem_storage=True,
        inactive_threshold=10.0,
        filter_subject=ALL_EVENTS,
    )


async def consume_raw(js, batch: int) -> int:  # noqa: ANN001
    """The baseline: the same backlog through the same PullReader the projector uses, bytes only (no decoding, no
    fold, no writes)."""
    info = await js.add_consumer(STREAM, raw_consumer())
    reader = await PullReader(js, STREAM, info.name, batch=batch).start()
    count = 0
    while count < info.num_pending:
        count += len(await reader.next())
    await reader.stop()
    await js.delete_consumer(STREAM, info.name)
    return count


async def consume_fetch(js, batch: int) -> int:  # noqa: ANN001
    """For reference: nats-py's own pull `fetch`, which this project no longer reads backlogs with."""
    psub = await js.pull_subscribe(ALL_EVENTS, durable=None, stream=STREAM, config=raw_consumer())
    pending = (await psub.consumer_info()).num_pending
    count = 0
    while count < pending:
        count += len(await psub.fetch(min(batch, pending - count), timeout=5.0))
    await psub.unsubscribe()
    return count


def run(quick: bool) -> Report:
    total = 5_000 if quick else 100_000
    report = Report("projector")
    with nats_server() as server:
        result = asyncio.run(measure(server.url, total))
    events, raw_s = result["events"], result["raw_s"]
    report.add(
        what="raw JetStream consume, bytes only (baseline)",
        events=events,
        seconds=round(raw_s, 3),
        events_per_s=round(events / raw_s),
    )
    report.add(
        what="(reference) the same with nats-py's fetch",
        events=events,
        seconds=round(result["fetch_s"], 3),
        events_per_s=round(events / result["fetch_s"]),
    )
    for name, what in (("live", "live projector catching up (fold + KV writes)"), ("rebuild", "tubeflow rebuild")):
        seconds = result[f"{name}_s"]
        report.add(
            what=what,
            events=events,
            seconds=round(seconds, 3),
            events_per_s=round(events / seconds),
            ratio=round(seconds / raw_s, 2),
            identical_to_fold=result[f"{name}_identical"],
        )
    report.notes.append(f"{result['jobs']} jobs of 20 items; target: >= 20,000 events/s, identical to the fold")
    return report
