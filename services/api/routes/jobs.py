"""Jobs: submit, cancel, retry, delete, list, read one, read its events."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, JSONBody, Parameter, SkipValidation
from pydantic import ValidationError

from contracts.bounds import as_utc
from contracts.decisions import Refusal
from contracts.views import JobStatus, JobView
from services.api.access import RateLimiter, client_key
from services.api.admission import Admission, invalid
from services.api.commands import JobCommands
from services.api.errors import error_responses, field_error
from services.api.hub import JobHub
from services.api.ownership import actor, check_job, may_see, owner_filter
from services.api.reads import JobReads
from services.api.requests import BATCH_MAX_BODY, BatchAccepted, BatchRequest, EventRecord, JobList, JobRequest
from services.api.search import MAX_QUERY, Sort
from services.runtime.tracing import span


async def _existing(reads: JobReads, job_id: str, request: Request) -> JobView:
    """The job, if it exists and is the asker's to see (an admin's: any); 404 otherwise (no existence leak)."""
    view = await reads.get(job_id)
    if view is None or not may_see(request, view.owner):
        raise NotFoundException(f"no job {job_id}")
    return view


def _accepted(outcome: JobView | Refusal, job_id: str) -> Response[JobView]:
    """202 with the view, or 409 naming why the command does not apply."""
    if isinstance(outcome, Refusal):
        raise field_error(409, "job_id", outcome.code, outcome.message, detail=f"job {job_id}: {outcome.message}")
    return Response(outcome, status_code=202)


# ISO 8601 only, as the document says: Litestar's conversion would also take "0.5" as seconds since 1970 (issue 23).
ISO_TIME = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$"


def _instant(field: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        raise field_error(422, field, "invalid", "must be an ISO 8601 date-time, like 2026-12-01T12:00:00Z") from None


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
        # Not validated: Litestar would try to convert the dataclass field by field.
        admission: NamedDependency[SkipValidation[Admission]],
        rate_limiter: NamedDependency[RateLimiter],
    ) -> Response[JobView]:
        """Accepts the job without contacting the URL; the downloader resolves it. Returns the job's first view."""
        data = await admission.check(data, user=actor(request))
        rate_limiter.check(client_key(request))
        key = request.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= 255:
            raise field_error(422, "Idempotency-Key", "invalid", "must be 1 to 255 characters")
        with span("POST /api/jobs", url=data.url, mode=data.mode):
            view = await commands.submit(data, idempotency_key=key, actor=actor(request))
        return Response(view, status_code=202, headers={"Location": f"/api/jobs/{view.id}"})

    @post(
        "/batch",
        status_code=202,
        summary="Submit many URLs at once, with the same fields",
        description='`{"urls": [...], ...the job fields}`: up to 500 URLs, checked all before any is accepted (a bad '
        "one: 422 naming `urls.N`, nothing created), counted as one job creation by the rate limit. An "
        "`Idempotency-Key` makes `KEY:N` the key of the N-th job.",
        responses=error_responses(400, 401, 413, 422, 429),
        request_max_body_size=BATCH_MAX_BODY,
    )
    async def create_batch(
        self,
        request: Request,
        data: JSONBody[BatchRequest],
        commands: NamedDependency[JobCommands],
        admission: NamedDependency[SkipValidation[Admission]],
        rate_limiter: NamedDependency[RateLimiter],
    ) -> Response[BatchAccepted]:
        shared = data.model_dump(exclude_unset=True, exclude={"urls"})
        jobs = []
        for n, url in enumerate(data.urls):
            where = f"urls.{n}"
            try:
                one = JobRequest.model_validate({**shared, "url": url})
            except ValidationError as exc:
                raise invalid(exc, lambda field, where=where: where if field == "url" else field) from None
            jobs.append(await admission.check(one, url_field=where, user=actor(request)))
        rate_limiter.check(client_key(request))
        key = request.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= 250:
            raise field_error(422, "Idempotency-Key", "invalid", "must be 1 to 250 characters")
        with span("POST /api/jobs/batch", urls=len(jobs)):
            views = [
                await commands.submit(job, idempotency_key=f"{key}:{n}" if key else None, actor=actor(request))
                for n, job in enumerate(jobs)
            ]
        return Response(BatchAccepted(jobs=views), status_code=202)

    @post(
        "/{job_id:str}/cancel",
        status_code=202,
        summary="Stop a job: running work stops, queued items are skipped, the job ends cancelled",
        responses=error_responses(401, 404, 409, 422),
    )
    async def cancel_job(
        self,
        request: Request,
        job_id: FromPath[str],
        reads: NamedDependency[JobReads],
        commands: NamedDependency[JobCommands],
    ) -> Response[JobView]:
        return _accepted(await commands.cancel(await _existing(reads, job_id, request), actor(request)), job_id)

    @post(
        "/{job_id:str}/retry",
        status_code=202,
        summary="Run the failed items of a finished job again",
        responses=error_responses(401, 404, 409, 422),
        description="202 with the view; the job runs again and ends in its new terminal status. 409 while it runs, "
        "when nothing failed, or when it was cancelled.",
    )
    async def retry_job(
        self,
        request: Request,
        job_id: FromPath[str],
        reads: NamedDependency[JobReads],
        commands: NamedDependency[JobCommands],
    ) -> Response[JobView]:
        return _accepted(await commands.retry(await _existing(reads, job_id, request), actor(request)), job_id)

    @get("/", summary="List and search jobs, newest first", responses=error_responses(400, 401, 422))
    async def list_jobs(
        self,
        request: Request,
        hub: NamedDependency[JobHub],
        limit: Annotated[int, Parameter(ge=1, le=500, description="page size")] = 50,
        status: Annotated[JobStatus | None, Parameter(description="only jobs in this status")] = None,
        cursor: Annotated[str | None, Parameter(max_length=100, description="the `next` of the previous page")] = None,
        q: Annotated[str | None, Parameter(max_length=MAX_QUERY, description="in the title or URL, any case")] = None,
        since: Annotated[
            str | None,
            Parameter(
                pattern=ISO_TIME,
                max_length=40,
                description="created (sort=finished: finished) at or after this time (ISO 8601; UTC if no zone)",
            ),
        ] = None,
        sort: Annotated[Sort, Parameter(description="newest created first, or newest finished first")] = "created",
        owner: Annotated[
            str | None,
            Parameter(max_length=128, description="an admin: only this user's jobs (others: always their own)"),
        ] = None,
    ) -> JobList:
        jobs, next_cursor = hub.index.page(
            limit=limit,
            status=status,
            before=cursor,
            q=q,
            since=_instant("since", since),
            sort=sort,
            owner=owner_filter(request) or owner,
        )
        return JobList(jobs=jobs, next=next_cursor)

    @delete(
        "/{job_id:str}",
        status_code=202,
        summary="Delete a job (a running one is cancelled first); ?files=true removes its files too",
        responses=error_responses(401, 404, 422),
        description="The job leaves lists and streams; its events stay (GET /api/jobs/{id}/events, replay). Files "
        "another job reused are kept for that job.",
    )
    async def delete_job(
        self,
        request: Request,
        job_id: FromPath[str],
        reads: NamedDependency[JobReads],
        commands: NamedDependency[JobCommands],
        files: Annotated[bool, Parameter(description="remove the job's files too")] = False,
    ) -> Response[JobView]:
        view = await _existing(reads, job_id, request)
        return Response(await commands.delete(view, files, actor=actor(request)), status_code=202)

    @get("/{job_id:str}", summary="One job with its items", responses=error_responses(401, 404, 422))
    async def get_job(
        self, request: Request, job_id: FromPath[str], reads: NamedDependency[JobReads], hub: NamedDependency[JobHub]
    ) -> Response[JobView]:
        await check_job(request, hub, reads, job_id)
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
        request: Request,
        job_id: FromPath[str],
        reads: NamedDependency[JobReads],
        hub: NamedDependency[JobHub],
        after: Annotated[int, Parameter(ge=0, description="only events with seq above this")] = 0,
        limit: Annotated[int, Parameter(ge=1, le=5000)] = 1000,
    ) -> list[EventRecord]:
        # A deleted job's events stay readable (audit, replay): only a job that never existed is 404.
        await check_job(request, hub, reads, job_id)
        stored = await reads.events(job_id, after=after, limit=limit)
        if not stored and await reads.requested(job_id) is None:
            raise NotFoundException(f"no job {job_id}")
        return [EventRecord(**s.as_json()) for s in stored]
