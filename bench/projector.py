"""Projector speed: fold a backlog of events into read models (the real Projector writing to KV), against a raw
JetStream consume of the same backlog; the result must equal the event-by-event fold."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

from nats.js import api

from bench.harness import Report, nats_server
from contracts import events as ev
from contracts.fold import fold
from contracts.ids import item_id, new_job_id, step_event_id
from services.progress.projector import BATCH, Projector
from services.runtime.eventstore import (
    ALL_EVENTS,
    STREAM,
    EventPublisher,
    connect,
    ensure_topology,
    iter_events,
    jobs_bucket,
)

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
    return [
        ev.make_event(
            t,
            job_id=job,
            item_id=iid,
            data=d,
            occurred_at=T0 + timedelta(milliseconds=n),
            event_id=f"{step_event_id(job, t, iid)}:{n}",
        )
        for n, (t, d, iid) in enumerate(out)
    ]


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
    raw_count = await consume_raw(js, BATCH)
    raw_s = time.perf_counter() - started
    raw = [stored async for stored in iter_events(js, ALL_EVENTS, batch=BATCH)]

    projector = Projector(await jobs_bucket(js))
    started = time.perf_counter()
    batch = []
    async for stored in iter_events(js, ALL_EVENTS, batch=BATCH):
        batch.append(stored)
        if len(batch) == BATCH:
            await projector.project(batch)
            batch = []
    if batch:
        await projector.project(batch)
    fold_s = time.perf_counter() - started

    by_job: dict[str, list] = {}
    for stored in raw:
        by_job.setdefault(stored.event.job_id, []).append(stored.event)
    kv = await jobs_bucket(js)
    identical = True
    for job, events in by_job.items():
        stored_view = (await kv.get(job)).value
        identical = identical and stored_view == fold(events).model_dump_json().encode()
    await nc.close()
    assert raw_count == len(raw)
    return {"events": len(raw), "raw_s": raw_s, "fold_s": fold_s, "identical": identical}


async def consume_raw(js, batch: int) -> int:  # noqa: ANN001
    """The baseline: the same backlog pulled with the same batch size, bytes only (no decoding, no fold)."""
    config = api.ConsumerConfig(
        ack_policy=api.AckPolicy.NONE, deliver_policy=api.DeliverPolicy.ALL, mem_storage=True, inactive_threshold=10.0
    )
    psub = await js.pull_subscribe(ALL_EVENTS, durable=None, stream=STREAM, config=config)
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
    report.add(
        what="raw JetStream consume, bytes only (baseline)",
        events=result["events"],
        seconds=round(result["raw_s"], 3),
        events_per_s=round(result["events"] / result["raw_s"]),
    )
    report.add(
        what="projector fold into KV",
        events=result["events"],
        seconds=round(result["fold_s"], 3),
        events_per_s=round(result["events"] / result["fold_s"]),
        ratio=round(result["fold_s"] / result["raw_s"], 2),
        identical_to_fold=result["identical"],
    )
    report.notes.append("target: >= 20,000 events/s; identical to the event-by-event fold")
    return report
