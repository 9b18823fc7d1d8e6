"""`tubeflow rebuild` and `tubeflow verify`: the read models are disposable, so they can be thrown away and folded
again from the stream, or compared with a fresh fold."""

from __future__ import annotations

import asyncio

from contracts.events import ALL_EVENTS
from contracts.fold import apply_or_set_aside
from contracts.ids import is_job_id
from contracts.views import VIEW_TOO_LARGE, JobSummary, JobView
from services.runtime.nats import JOBS_BUCKET, ensure_topology, iter_events, jobs_bucket, read_bucket
from services.runtime.nats.views import SUMMARY_KEYS, load, put_view

REBUILD_CONCURRENCY = 64


async def fold_stream(js) -> dict[str, JobView]:  # noqa: ANN001 - a JetStreamContext
    views: dict[str, JobView] = {}
    async for stored in iter_events(js, ALL_EVENTS, batch=2048):
        event = stored.event
        if event is None or not is_job_id(event.job_id):
            continue
        view, _ = apply_or_set_aside(views.get(event.job_id), event)
        if view is not None:
            views[event.job_id] = view
    return views


async def verify(js) -> list[str]:  # noqa: ANN001
    """Differences between the stored views and a fresh fold of the stream; empty when they agree."""
    folded = await fold_stream(js)
    kv = await jobs_bucket(js)
    stored_ids = set(await read_bucket(kv, keys=SUMMARY_KEYS))
    problems = []
    for job_id, view in folded.items():
        stored = await load(kv, job_id)
        if stored is None:
            problems.append(f"{job_id}: missing from the read models (fold has seq {view.seq})")
        elif f'"code":"{VIEW_TOO_LARGE}"'.encode() in stored.summary:
            continue  # cut where the projector's batches happened to end: not comparable with one fold
        elif stored.json() != view.model_dump_json().encode():
            try:
                seq = JobSummary.model_validate_json(stored.summary).seq
            except ValueError:
                seq = "unreadable"
            problems.append(f"{job_id}: stored view (seq {seq}) differs from the fold (seq {view.seq})")
    for job_id in stored_ids - folded.keys():
        problems.append(f"{job_id}: stored view has no events")
    return sorted(problems)


async def rebuild(js) -> int:  # noqa: ANN001
    """Delete the read-model bucket, create it again and write the fold of the whole stream. Returns the job count."""
    folded = await fold_stream(js)
    await js.delete_key_value(JOBS_BUCKET)
    await ensure_topology(js)
    kv = await jobs_bucket(js)
    views = list(folded.values())
    for start in range(0, len(views), REBUILD_CONCURRENCY):  # jobs are independent: many writes in flight at once
        await asyncio.gather(*(put_view(kv, view) for view in views[start : start + REBUILD_CONCURRENCY]))
    return len(folded)
