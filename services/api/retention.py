"""TUBEFLOW_JOB_RETENTION_DAYS: finished jobs are deleted (`job.deleted`, reason `retention`) that many days after they
finished, with their files when TUBEFLOW_RETENTION_DELETE_FILES is set. Every API process runs it; the event's id is
fixed per job, so two processes deleting the same job publish one event."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from services.api.commands import JobCommands
from services.api.hub import JobHub
from services.api.reads import JobReads
from services.runtime.clock import utcnow

log = logging.getLogger("tubeflow.retention")

EVERY = 3600.0
# Deleted per sweep at most (the next sweep goes on).
BATCH = 1000


async def sweep_once(hub: JobHub, reads: JobReads, commands: JobCommands, days: float, files: bool) -> int:
    cutoff = utcnow() - timedelta(days=days)
    due = [s.id for s in hub.summaries.values() if s.finished_at is not None and s.finished_at < cutoff][:BATCH]
    deleted = 0
    for job_id in due:
        view = await reads.get(job_id)
        if view is None or not view.terminal:
            continue
        await commands.delete(view, files, reason="retention")
        deleted += 1
    if deleted:
        log.info("retention: %d job(s) finished before %s deleted", deleted, cutoff.isoformat())
    return deleted


async def run_retention(
    hub: JobHub, reads: JobReads, commands: JobCommands, days: float, files: bool, stop: asyncio.Event, every=EVERY
) -> None:  # noqa: ANN001
    if days <= 0:
        return
    while not stop.is_set():
        try:
            await sweep_once(hub, reads, commands, days, files)
        except Exception as exc:  # NATS away for a moment: the next sweep tries again
            log.warning("retention sweep failed: %s", exc)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
