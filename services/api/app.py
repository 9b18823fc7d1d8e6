"""The Litestar gateway: the HTTP contract over the job store, SSE fed by the hub, and the produced files."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, AsyncIterator

from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.params import FromPath, JSONBody, Parameter
from litestar.response import ServerSentEvent
from litestar.static_files import create_static_files_router
from pydantic import BaseModel

from contracts.views import JobStatus, JobView
from services.api.access import RateLimiter, client_key, token_guard
from services.api.hub import JobHub
from services.api.jobs import EventRecord, JobList, JobRequest, JobStore, error_code
from services.api.media import media_response, resolve_media
from services.api.sse import job_stream, jobs_stream, parse_last_event_id
from services.runtime.eventstore import (
    IDEMPOTENCY_BUCKET,
    STREAM,
    EventPublisher,
    connect,
    jobs_bucket,
    prepare,
)
from services.runtime.metrics import JOBS, SSE_CLIENTS, LoopLagMonitor, freeze_startup_objects
from services.runtime.metrics import render as render_metrics
from services.runtime.settings import Settings
from services.runtime.tracing import span

log = logging.getLogger("tubeflow.api")


class FieldError(BaseModel):
    field: str
    code: str
    message: str


class ErrorBody(BaseModel):
    """Every 4xx answer: what went wrong, and per field the stable code and the message."""

    status_code: int
    detail: str
    errors: list[FieldError] = []


def _errors(*codes: int) -> dict[int, ResponseSpec]:
    meaning = {
        400: "malformed request (e.g. JSON that does not parse)",
        401: "a bearer token is required (TUBEFLOW_API_TOKEN)",
        404: "no such job or file",
        409: "the job is not in a state that allows this",
        413: "request body over 64 KiB",
        416: "requested range not satisfiable",
        422: "a field is invalid; `errors` names it",
        429: "too many jobs created; see Retry-After",
    }
    return {code: ResponseSpec(data_container=ErrorBody, description=meaning[code]) for code in codes}


class ApiError(HTTPException):
    """A 4xx whose body names the field and the problem: {"status_code", "detail", "errors": [...]}."""

    def __init__(self, status_code: int, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail=detail, status_code=status_code, extra={"errors": errors or []})


def _validation_error(request: Request, exc: ValidationException) -> Response:
    errors = []
    for problem in exc.extra if isinstance(exc.extra, list) else []:
        message = str(problem.get("message", "invalid"))
        field = problem.get("key") or "body"
        errors.append({"field": field, "code": error_code(message), "message": message})
    if not errors:
        errors.append({"field": "body", "code": "invalid", "message": str(exc.detail)})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return Response({"status_code": 422, "detail": detail, "errors": errors}, status_code=422)


def _api_error(request: Request, exc: HTTPException) -> Response:
    extra = exc.extra if isinstance(exc.extra, dict) else {}
    return Response(
        {"status_code": exc.status_code, "detail": exc.detail, "errors": extra.get("errors", [])},
        status_code=exc.status_code,
        headers=exc.headers,
        media_type="application/json",
    )


async def _store(state: State) -> JobStore:
    return state.store


async def _hub(state: State) -> JobHub:
    return state.hub


async def _settings(state: State) -> Settings:
    return state.settings


# --- jobs -----------------------------------------------------------------------------------------------------


@post(
    "/api/jobs",
    status_code=202,
    summary="Submit a video or playlist URL",
    tags=["jobs"],
    responses=_errors(400, 401, 413, 422, 429),
)
async def create_job(
    request: Request, data: JSONBody[JobRequest], store: NamedDependency[JobStore]
) -> Response[JobView]:
    """Accepts the job without contacting the URL; the downloader resolves it. Returns the job's first view."""
    reason = request.app.state.address_policy.url_reason(data.url)
    if reason:
        raise ApiError(
            422, f"url: {reason}", [{"field": "url", "code": "forbidden_address", "message": f"refused: {reason}"}]
        )
    request.app.state.rate_limiter.check(client_key(request))
    key = request.headers.get("idempotency-key")
    if key is not None and not 1 <= len(key) <= 255:
        raise ApiError(
            422,
            "Idempotency-Key: must be 1 to 255 characters",
            [{"field": "Idempotency-Key", "code": "invalid", "message": "must be 1 to 255 characters"}],
        )
    with span("POST /api/jobs", url=data.url, mode=data.mode):
        view = await store.submit(data, idempotency_key=key)
    return Response(view, status_code=202, headers={"Location": f"/api/jobs/{view.id}"})


@post(
    "/api/jobs/{job_id:str}/cancel",
    status_code=202,
    summary="Stop a job: running work stops, queued items are skipped, the job ends cancelled",
    responses=_errors(401, 404, 409, 422),
    tags=["jobs"],
)
async def cancel_job(job_id: FromPath[str], store: NamedDependency[JobStore]) -> Response[JobView]:
    view = await store.get(job_id)
    if view is None:
        raise NotFoundException(f"no job {job_id}")
    if view.terminal:
        raise ApiError(
            409,
            f"job {job_id} already ended {view.status}",
            [{"field": "job_id", "code": "already_finished", "message": f"the job is {view.status}"}],
        )
    return Response(await store.cancel(view), status_code=202)


@post(
    "/api/jobs/{job_id:str}/retry",
    status_code=202,
    summary="Run the failed items of a finished job again",
    responses=_errors(401, 404, 409, 422),
    description="202 with the view; the job runs again and ends in its new terminal status. 409 while it runs, "
    "when nothing failed, or when it was cancelled.",
    tags=["jobs"],
)
async def retry_job(job_id: FromPath[str], store: NamedDependency[JobStore]) -> Response[JobView]:
    view = await store.get(job_id)
    if view is None:
        raise NotFoundException(f"no job {job_id}")
    problem = None
    if not view.terminal:
        problem = ("not_finished", f"the job is {view.status}; retry it once it has finished")
    elif view.status == "cancelled":
        problem = ("cancelled", "a cancelled job is not run again; submit it anew")
    elif view.status == "completed":
        problem = ("nothing_to_retry", "every item of the job succeeded")
    if problem:
        raise ApiError(
            409, f"job {job_id}: {problem[1]}", [{"field": "job_id", "code": problem[0], "message": problem[1]}]
        )
    return Response(await store.retry(view), status_code=202)


@get("/api/jobs", summary="List jobs, newest first", tags=["jobs"], responses=_errors(400, 401, 422))
async def list_jobs(
    hub: NamedDependency[JobHub],
    limit: Annotated[int, Parameter(ge=1, le=500, description="page size")] = 50,
    status: Annotated[JobStatus | None, Parameter(description="only jobs in this status")] = None,
    cursor: Annotated[str | None, Parameter(max_length=64, description="the `next` of the previous page")] = None,
) -> JobList:
    jobs, next_cursor = hub.page(limit=limit, status=status, before=cursor)
    return JobList(jobs=jobs, next=next_cursor)


@get("/api/jobs/{job_id:str}", summary="One job with its items", tags=["jobs"], responses=_errors(401, 404, 422))
async def get_job(job_id: FromPath[str], store: NamedDependency[JobStore]) -> Response[JobView]:
    data = await store.get_json(job_id)
    if data is None:
        raise NotFoundException(f"no job {job_id}")
    return Response(data, media_type="application/json")


@get(
    "/api/jobs/{job_id:str}/events",
    summary="The job's stored events, in stream order",
    tags=["jobs"],
    responses=_errors(400, 401, 404, 422),
)
async def get_job_events(
    job_id: FromPath[str],
    store: NamedDependency[JobStore],
    after: Annotated[int, Parameter(ge=0, description="only events with seq above this")] = 0,
    limit: Annotated[int, Parameter(ge=1, le=5000)] = 1000,
) -> list[EventRecord]:
    if await store.get(job_id) is None:
        raise NotFoundException(f"no job {job_id}")
    stored = await store.events(job_id, after=after, limit=limit)
    return [EventRecord(**s.as_json()) for s in stored]


@get(
    "/api/jobs/stream",
    summary="Every job's summary as Server-Sent Events, for dashboards",
    description="On connect the newest `limit` jobs (or, with Last-Event-ID, every job changed since), then an "
    "`event: job` whenever a job changes; ids as in the per-job stream; comment heartbeats when idle.",
    tags=["jobs"],
    responses=_errors(401, 422),
)
async def stream_jobs(
    request: Request,
    hub: NamedDependency[JobHub],
    settings: NamedDependency[Settings],
    limit: Annotated[int, Parameter(ge=0, le=500, description="jobs in the first snapshot")] = 50,
) -> ServerSentEvent:
    last_id = parse_last_event_id(request.headers.get("last-event-id") or request.query_params.get("last_event_id"))
    watcher = hub.watch_all()
    if last_id >= 0:
        first = hub.changed_since(last_id // 2)
        first = [s for s in first if 2 * s.seq + 1 > last_id]
    else:
        newest, _ = hub.page(limit=limit, status=None, before=None)
        first = sorted(newest, key=lambda s: s.seq)
    return ServerSentEvent(
        jobs_stream(hub, watcher, first, settings.sse_heartbeat),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@get(
    "/api/jobs/{job_id:str}/stream",
    summary="Live job view as Server-Sent Events",
    description="`event: job` (the view without items) and `event: item` messages; ids increase; honours "
    "Last-Event-ID; closes after the terminal state; comment heartbeats when idle.",
    tags=["jobs"],
    responses=_errors(401, 404),
)
async def stream_job(
    job_id: FromPath[str],
    request: Request,
    store: NamedDependency[JobStore],
    hub: NamedDependency[JobHub],
    settings: NamedDependency[Settings],
) -> ServerSentEvent:
    last_id = parse_last_event_id(request.headers.get("last-event-id") or request.query_params.get("last_event_id"))
    watcher = hub.watch(job_id)
    try:
        view = await store.get(job_id)
    except BaseException:
        hub.unwatch(watcher)
        raise
    if view is None:
        hub.unwatch(watcher)
        raise NotFoundException(f"no job {job_id}")
    return ServerSentEvent(
        job_stream(hub, watcher, view, last_id, settings.sse_heartbeat),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# --- files, health, page --------------------------------------------------------------------------------------


@get(
    "/media/{path:path}",
    summary="A produced file (Range supported)",
    tags=["media"],
    media_type="application/octet-stream",
    responses=_errors(401, 404, 416),
)
async def get_media(path: FromPath[str], request: Request, settings: NamedDependency[Settings]) -> Response:
    target = resolve_media(settings.media_dir, path)
    return media_response(target, request.headers.get("range"))


@get("/metrics", summary="Prometheus metrics of this API process", tags=["health"], media_type="text/plain")
async def metrics(hub: NamedDependency[JobHub]) -> Response[bytes]:
    counts: dict[str, int] = {}
    for summary in hub.summaries.values():
        counts[summary.status] = counts.get(summary.status, 0) + 1
    for status in ("queued", "resolving", "running", "completed", "partial", "failed", "cancelled"):
        JOBS.labels(status).set(counts.get(status, 0))
    SSE_CLIENTS.set(hub.watcher_count)
    body, content_type = render_metrics()
    return Response(body, media_type=content_type)


@get("/healthz", summary="The process is alive", tags=["health"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", summary="NATS connected and the event stream present", tags=["health"])
async def readyz(state: State) -> Response[dict[str, str]]:
    nc = state.nc
    if not nc.is_connected:
        return Response({"status": "unavailable", "reason": "NATS is not connected"}, status_code=503)
    try:
        await asyncio.wait_for(state.js.stream_info(STREAM), 2.0)
    except Exception as exc:
        return Response({"status": "unavailable", "reason": f"stream {STREAM}: {exc}"}, status_code=503)
    return Response({"status": "ready"})


STATIC_DIR = Path(__file__).with_name("static")


@get("/", media_type="text/html", include_in_schema=False)
async def index() -> Response[bytes]:
    return Response(
        (STATIC_DIR / "index.html").read_bytes(), media_type="text/html", headers={"Cache-Control": "no-cache"}
    )


def create_app(settings: Settings) -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        assert settings.nats_url, "TUBEFLOW_NATS_URL is required"
        hub = JobHub()
        kv_ref: list = []

        async def on_reconnect() -> None:
            if kv_ref:
                await hub.refresh(kv_ref[0])

        nc = await connect(settings.nats_url, "tubeflow-api", on_reconnect=on_reconnect)
        js = nc.jetstream()
        await prepare(js, settings)
        kv = await jobs_bucket(js)
        kv_ref.append(kv)
        await hub.start(nc, kv)
        app.state.nc = nc
        app.state.js = js
        app.state.hub = hub
        app.state.store = JobStore(js, kv, await js.key_value(IDEMPOTENCY_BUCKET), EventPublisher(js), hub)
        freeze_startup_objects()
        lag = LoopLagMonitor().start()
        try:
            yield
        finally:
            lag.stop()
            await hub.stop()
            await nc.drain()

    settings.media_dir.mkdir(parents=True, exist_ok=True)
    return Litestar(
        route_handlers=[
            create_job,
            cancel_job,
            retry_job,
            list_jobs,
            get_job,
            get_job_events,
            stream_jobs,
            stream_job,
            get_media,
            healthz,
            metrics,
            readyz,
            index,
            create_static_files_router(path="/static", directories=[STATIC_DIR], include_in_schema=False),
        ],
        lifespan=[lifespan],
        state=State(
            {
                "settings": settings,
                "rate_limiter": RateLimiter(settings.rate_limit),
                # Made once: parsing TUBEFLOW_ALLOWED_NETWORKS is not per-request work.
                "address_policy": settings.address_policy(),
            }
        ),
        guards=[token_guard(settings.api_token)],
        dependencies={"store": Provide(_store), "hub": Provide(_hub), "settings": Provide(_settings)},
        exception_handlers={ValidationException: _validation_error, HTTPException: _api_error},
        openapi_config=OpenAPIConfig(title="tubeflow", version="0.1.0", path="/schema"),
        request_max_body_size=64 * 1024,
        logging_config=None,
    )
