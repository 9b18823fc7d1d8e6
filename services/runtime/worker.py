"""The lifecycle both worker services share: connect, declare, listen for cancels, run a FastStream broker, and on
stop hand back or finish in-flight work within the grace period."""

from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable

from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

from contracts.views import JobSummary
from services.runtime.cancellation import Cancellations
from services.runtime.eventstore import connect, jobs_bucket, prepare
from services.runtime.metrics import IN_FLIGHT, freeze_startup_objects, serve_health
from services.runtime.settings import Settings

log = logging.getLogger("tubeflow.worker")


@dataclass
class WorkerContext:
    js: JetStreamContext
    cancellations: Cancellations


def new_broker(url: str) -> NatsBroker:
    return NatsBroker(
        url, logger=logging.getLogger("tubeflow.faststream"), log_level=logging.DEBUG, max_reconnect_attempts=-1
    )


async def run_worker(
    name: str,
    settings: Settings,
    stop: asyncio.Event,
    build: Callable[[WorkerContext], Awaitable[NatsBroker] | NatsBroker],
    on_stopped: Callable[[], None] | None = None,
) -> None:
    assert settings.nats_url, "TUBEFLOW_NATS_URL is required"
    nc = await connect(settings.nats_url, f"tubeflow-{name}")
    js = nc.jetstream()
    await prepare(js, settings)
    kv = await jobs_bucket(js)

    async def cancelled_in_store(job_id: str) -> bool:
        try:
            entry = await kv.get(job_id)
        except KeyNotFoundError:
            return False
        # The summary only (the items are skipped, not built): this runs before every download, and a playlist's
        # view can hold a thousand items.
        return bool(entry.value) and JobSummary.model_validate_json(entry.value).status == "cancelled"

    cancellations = Cancellations(cancelled_in_store)
    await cancellations.subscribe(nc)
    settings.media_dir.mkdir(parents=True, exist_ok=True)
    health = None
    if settings.health_port:
        health = await serve_health(settings.health_host, settings.health_port, lambda: nc.is_connected)
    IN_FLIGHT.labels(name).set_function(lambda: cancellations.running)
    broker = build(WorkerContext(js, cancellations))
    if inspect.isawaitable(broker):
        broker = await broker
    await broker.start()
    freeze_startup_objects()
    try:
        await stop.wait()
    finally:
        log.info("%s stopping: handing back %d running task(s)", name, cancellations.running)
        await cancellations.shutdown(settings.shutdown_grace)
        await broker.stop()
        if on_stopped is not None:
            on_stopped()
        if health is not None:
            health.close()
        await nc.drain()
