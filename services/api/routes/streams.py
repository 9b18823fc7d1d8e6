"""Server-Sent Events: one job live, or every job's summary for dashboards."""

from __future__ import annotations

from typing import Annotated, AsyncIterator

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, Parameter
from litestar.response import ServerSentEvent

from services.api.access import StreamLimiter, client_key
from services.api.errors import error_responses
from services.api.hub import JobHub
from services.api.ownership import check_job, owner_filter
from services.api.reads import JobReads
from services.api.sse import job_stream, jobs_stream, parse_last_event_id
from services.runtime.settings import Settings

_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _counted(messages: AsyncIterator, limiter: StreamLimiter, client: str) -> AsyncIterator:
    """The stream's messages, holding one of the client's stream slots until it ends (or the client goes)."""
    try:
        async for message in messages:
            yield message
    finally:
        limiter.release(client)


def _last_event_id(request: Request) -> int:
    return parse_last_event_id(request.headers.get("last-event-id") or request.query_params.get("last_event_id"))


class StreamsController(Controller):
    path = "/api/jobs"
    tags = ["jobs"]

    @get(
        "/stream",
        summary="Every job's summary as Server-Sent Events, for dashboards",
        description="On connect the newest `limit` jobs (or, with Last-Event-ID, every job changed since), then an "
        "`event: job` whenever a job changes; ids as in the per-job stream; comment heartbeats when idle.",
        responses=error_responses(401, 422, 429),
    )
    async def stream_jobs(
        self,
        request: Request,
        hub: NamedDependency[JobHub],
        settings: NamedDependency[Settings],
        stream_limiter: NamedDependency[StreamLimiter],
        limit: Annotated[int, Parameter(ge=0, le=500, description="jobs in the first snapshot")] = 50,
    ) -> ServerSentEvent:
        last_id = _last_event_id(request)
        client = client_key(request)
        owner = owner_filter(request)
        stream_limiter.acquire(client)
        watcher = hub.watch_all()
        if last_id >= 0:
            first = hub.changed_since(last_id // 2)
            first = [s for s in first if 2 * s.seq + 1 > last_id]
        else:
            newest, _ = hub.index.page(limit=limit, owner=owner)
            first = sorted(newest, key=lambda s: s.seq)
        stream = jobs_stream(hub, watcher, first, settings.sse_heartbeat, owner)
        return ServerSentEvent(_counted(stream, stream_limiter, client), headers=_HEADERS)

    @get(
        "/{job_id:str}/stream",
        summary="Live job view as Server-Sent Events",
        description="`event: job` (the view without items) and `event: item` messages; ids increase; honours "
        "Last-Event-ID; closes after the terminal state; comment heartbeats when idle.",
        responses=error_responses(401, 404, 429),
    )
    async def stream_job(
        self,
        job_id: FromPath[str],
        request: Request,
        reads: NamedDependency[JobReads],
        hub: NamedDependency[JobHub],
        settings: NamedDependency[Settings],
        stream_limiter: NamedDependency[StreamLimiter],
    ) -> ServerSentEvent:
        last_id = _last_event_id(request)
        await check_job(request, hub, reads, job_id)
        client = client_key(request)
        stream_limiter.acquire(client)
        try:
            watcher, view = await hub.watch_stored(job_id)
            if view is None:  # accepted, not projected yet: the `requested` event says enough
                view = await reads.get(job_id)
        except BaseException:
            stream_limiter.release(client)
            raise
        if view is None:
            hub.unwatch(watcher)
            stream_limiter.release(client)
            raise NotFoundException(f"no job {job_id}")
        stream = job_stream(hub, watcher, view, last_id, settings.sse_heartbeat)
        return ServerSentEvent(_counted(stream, stream_limiter, client), headers=_HEADERS)
