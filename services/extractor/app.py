"""The extractor service: a FastStream app consuming `download.completed` events from the event stream."""

from __future__ import annotations

import asyncio

from faststream.nats import NatsBroker

from services.extractor.handlers import Extractor
from services.runtime.consumers import work_subscriber
from services.runtime.eventstore import EventPublisher
from services.runtime.settings import Settings, worker_identity
from services.runtime.worker import WorkerContext, new_broker, run_worker

DURABLE = "extractor-v1"


def build_broker(url: str, extractor: Extractor, settings: Settings, context: WorkerContext) -> NatsBroker:
    broker = new_broker(url)
    work_subscriber(
        broker,
        context.js,
        event_type="download.completed",
        durable=DURABLE,
        max_workers=settings.extract_concurrency,
        max_ack_pending=1024,
        ack_wait=settings.ack_wait,
        work=extractor.extract,  # type: ignore[arg-type]
    )
    return broker


async def run(settings: Settings, stop: asyncio.Event) -> None:
    def build(context: WorkerContext) -> NatsBroker:
        extractor = Extractor(
            publisher=EventPublisher(context.js),
            media_dir=settings.media_dir.resolve(),
            worker=worker_identity(settings),
            progress_interval=settings.progress_interval,
            progress_min_step=settings.progress_min_step,
            cancellations=context.cancellations,
        )
        return build_broker(settings.nats_url, extractor, settings, context)  # type: ignore[arg-type]

    await run_worker("extractor", settings, stop, build)
