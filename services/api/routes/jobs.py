"""Jobs: submit, cancel, retry, list, read one, read its events."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Annotated

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, JSONBody, Parameter, SkipValidation
from pydantic import ValidationError

from contracts.decisions import Refusal
from contracts.views import JobStatus, JobView
from services.api.access import RateLimiter, client_key
from services.api.commands import JobCommands
from services.api.errors import ApiError, error_responses, field_error
from services.api.hub import JobHub
from services.api.presets import PresetBook
from services.api.reads import JobReads
from services.api.requests import EventRecord, JobList, JobRequest
from services.api.routes.presets import invalid
from services.api.search import MAX_QUERY, Sort
from services.runtime.addresses import AddressPolicy
from services.runtime.cookies import CookieStore
from services.runtime.settings import Settings
from services.runtime.tracing import span


async def _existing(reads: JobReads, job_id: str) -> JobView:
    view = await reads.get(job_id)
    if view is None:
        raise NotFoundException(f"no job {job_id}")
    return view


def _accepted(outcome: JobView | Refusal, job_id: str) -> Response[JobView]:
    """202 with the view, or 409 naming why the command does not apply."""
    if isinstance(outcome, Refusal):
        raise field_error(409, "job_id", outcome.code, outcome.message, detail=f"job {job_id}: {outcome.message}")
    return Response(outcome, status_code=202)


class JobsController(Controller):
    path = "/api/jobs"
    tags = ["jobs"]

    @post(
        "/",
        status_code=202,
        summary="Submit a video or playlist URL",
        responses=error_responses(400, 401, 413, 422, 429),
    )
    async def create_job(
        self,
        request: Request,
        data: JSONBody[JobRequest],
        commands: NamedDependency[JobCommands],
        # Not validated: Litestar would try to convert the policy dataclass field by field.
        address_policy: NamedDependency[SkipValidation[AddressPolicy]],
        rate_limiter: NamedDependency[RateLimiter],
        settings: NamedDependency[Settings],
        cookie_store: NamedDependency[CookieStore],
        presets: NamedDependency[PresetBook],
    ) -> Response[JobView]:
        """Accepts the job without contacting the URL; the downloader resolves it. Returns the job's first view."""
        if data.preset is not None:
            preset = presets.get(data.preset)
            if preset is None:
                raise field_error(422, "preset", "unknown_preset", f"no preset {data.preset!r} (GET /api/presets)")
            try:
                data = data.with_preset(preset.fields)
            except ValidationError as exc:
                raise invalid(exc) from None
        reason = address_policy.url_reason(data.url)
        if reason:
            raise ApiError(
                422, f"url: {reason}", [{"field": "url", "code": "forbidden_address", "message": f"refused: {reason}"}]
            )
        if data.playlist_items and max(map(int, re.findall(r"\d+", data.playlist_items))) > settings.max_playlist_items:
            # yt-dlp would walk the playlist up to the highest entry asked for before the cap applies.
            raise field_error(
                422,
                "playlist_items",
                "too_large",
                f"entries above {settings.max_playlist_items} (TUBEFLOW_MAX_PLAYLIST_ITEMS) can't be asked for",
            )
        if data.cookies and not await asyncio.to_thread(cookie_store.exists, data.cookies):
            raise field_error(
                422, "cookies", "unknown_cookies", f"no cookie profile {data.cookies!r} (GET /api/cookies lists them)"
            )
        rate_limiter.check(client_key(request))
        key = request.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= 255:
            raise field_error(422, "Idempotency-Key", "invalid", "must be 1 to 255 characters")
        with span("POST /api/jobs", url=data.url, mode=data.mode):
            view = await commands.submit(data, idempotency_key=key)
        return Response(view, status_code=202, headers={"Location": f"/api/jobs/{view.id}"})

    @post(
        "/{job_id:str}/cancel",
        status_code=202,
        summary="Stop a job: running work stops, queued items are skipped, the job ends cancelled",
        responses=error_responses(401, 404, 409, 422),
    )
    async def cancel_job(
        self, job_id: FromPath[str], reads: NamedDependency[JobReads], commands: NamedDependency[JobCommands]
    ) -> Response[JobView]:
        return _accepted(await commands.cancel(await _existing(reads, job_id)), job_id)

    @post(
        "/{job_id:str}/retry",
        status_code=202,
        summary="Run the failed items of a finished job again",
        responses=error_responses(401, 404, 409, 422),
        description="202 with the view; the job runs again and ends in its new terminal status. 409 while it runs, "
        "when nothing failed, or when it was cancelled.",
    )
    async def retry_job(
        self, job_id: FromPath[str], reads: NamedDependency[JobReads], commands: NamedDependency[JobCommands]
    ) -> Response[JobView]:
        return _accepted(await commands.retry(await _existing(reads, job_id)), job_id)

    @get("/", summary="List and search jobs, newest first", responses=error_responses(400, 401, 422))
    async def list_jobs(
        self,
        hub: NamedDependency[JobHub],
        limit: Annotated[int, Parameter(ge=1, le=500, description="page size")] = 50,
        status: Annotated[JobStatus | None, Parameter(description="only jobs in this status")] = None,
        cursor: Annotated[str | None, Parameter(max_length=100, description="the `next` of the previous page")] = None,
        q: Annotated[str | None, Parameter(max_length=MAX_QUERY, description="in the title or URL, any case")] = None,
        since: Annotated[
            datetime | None, Parameter(description="created (sort=finished: finished) at or after this time")
        ] = None,
        sort: Annotated[Sort, Parameter(description="newest created first, or newest finished first")] = "created",
    ) -> JobList:
        jobs, next_cursor = hub.index.page(limit=limit, status=status, before=cursor, q=q, since=since, sort=sort)
        return JobList(jobs=jobs, next=next_cursor)

    @get("/{job_id:str}", summary="One job with its items", responses=error_responses(401, 404, 422))
    async def get_job(self, job_id: FromPath[str], reads: NamedDependency[JobReads]) -> Response[JobView]:
        data = await reads.get_json(job_id)
        if data is None:
            raise NotFoundException(f"no job {job_id}")
        return Response(data, media_type="application/json")

    @get(
        "/{job_id:str}/events",
        summary="The job's stored events, in stream order",
        responses=error_responses(400, 401, 404, 422),
    )
    async def get_job_events(
        self,
        job_id: FromPath[str],
        reads: NamedDependency[JobReads],
        after: Annotated[int, Parameter(ge=0, description="only events with seq above this")] = 0,
        limit: Annotated[int, Parameter(ge=1, le=5000)] = 1000,
    ) -> list[EventRecord]:
        await _existing(reads, job_id)
        stored = await reads.events(job_id, after=after, limit=limit)
        return [EventRecord(**s.as_json()) for s in stored]
