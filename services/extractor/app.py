"""The extractor service: a FastStream app consuming `download.completed` events from the event stream."""

from __future__ import annotations

import asyncio

from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub

from contracts import events as ev
from services.extractor.handlers import Extractor
from services.runtime.consumers import handle, work_consumer
from services.runtime.eventstore import STREAM, DeadLetters, EventPublisher
from services.runtime.settings import Settings, worker_identity
from services.runtime.worker import WorkerContext, new_broker, run_worker

DURABLE = "extractor-v1"


def build_broker(url: str, extractor: Extractor, settings: Settings, context: WorkerContext) -> NatsBroker:
    broker = new_broker(url)
    dead_letters = DeadLetters(context.js, DURABLE)
    ack_wait = settings.ack_wait

    @broker.subscriber(
        ev.subject_filter("download.completed"),
        stream=JStream(STREAM, declare=False),
        durable=DURABLE,
        pull_sub=PullSub(batch_size=1, timeout=5.0),
        config=work_consumer(ev.subject_filter("download.completed"), max_ack_pending=1024, ack_wait=ack_wait),
        ack_policy=AckPolicy.MANUAL,
        max_workers=settings.extract_concurrency,
        title="extractor:download.completed",
    )
    async def on_download_completed(msg: NatsMessage) -> None:
        await handle(msg, extractor.extract, dead_letters=dead_letters, ack_wait=ack_wait)  # type: ignore[arg-type]

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
