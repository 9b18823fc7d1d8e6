"""Liveness, readiness (NATS connected, the event stream there) and Prometheus metrics of this API process."""

from __future__ import annotations

import asyncio
from typing import get_args

from litestar import Response, get
from litestar.di import NamedDependency
from nats.aio.client import Client as NATS

from contracts.views import JobStatus
from services.api.engine import EngineBook
from services.api.hub import JobHub
from services.runtime.metrics import JOBS, SSE_CLIENTS
from services.runtime.metrics import render as render_metrics
from services.runtime.nats import STREAM

_STATUSES = get_args(JobStatus)


@get("/metrics", summary="Prometheus metrics of this API process", tags=["health"], media_type="text/plain")
async def metrics(hub: NamedDependency[JobHub]) -> Response[bytes]:
    counts: dict[str, int] = {}
    for summary in hub.summaries.values():
        counts[summary.status] = counts.get(summary.status, 0) + 1
    for status in _STATUSES:
        JOBS.labels(status).set(counts.get(status, 0))
    SSE_CLIENTS.set(hub.watcher_count)
    body, content_type = render_metrics()
    return Response(body, media_type=content_type)


@get("/healthz", summary="The process is alive", tags=["health"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get(
    "/readyz",
    summary="NATS connected and the event stream present; reports (never fails on) the PO-token provider",
    tags=["health"],
)
async def readyz(nc: NamedDependency[NATS], engines: NamedDependency[EngineBook]) -> Response[dict[str, str]]:
    if not nc.is_connected:
        return Response({"status": "unavailable", "reason": "NATS is not connected"}, status_code=503)
    try:
        await asyncio.wait_for(nc.jetstream().stream_info(STREAM), 2.0)
    except Exception as exc:
        return Response({"status": "unavailable", "reason": f"stream {STREAM}: {exc}"}, status_code=503)
    answer = {"status": "ready"}
    providers = [facts.pot_provider for facts in await engines.all() if facts.pot_provider.url]
    if providers:
        # Downloads of other sites don't need it: said, not failed on (GET /api/info and `tubeflow doctor` say more).
        answer["pot_provider"] = "answering" if providers[0].answering else "not answering"
    return Response(answer)


ROUTES = [metrics, healthz, readyz]
