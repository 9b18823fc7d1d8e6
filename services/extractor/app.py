"""The extractor service: a FastStream app consuming `download.completed` events from the event stream."""

from __future__ import annotations

import asyncio
import logging

from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub

from contracts import events as ev
from services.extractor.handlers import Extractor
from services.runtime.consumers import handle, work_consumer
from services.runtime.eventstore import STREAM, EventPublisher, connect, ensure_topology
from services.runtime.settings import Settings, worker_identity

DURABLE = "extractor-v1"


def build_broker(url: str, extractor: Extractor, concurrency: int) -> NatsBroker:
    broker = NatsBroker(
        url, logger=logging.getLogger("tubeflow.faststream"), log_level=logging.DEBUG, max_reconnect_attempts=-1
    )

    @broker.subscriber(
        ev.subject_filter("download.completed"),
        stream=JStream(STREAM, declare=False),
        durable=DURABLE,
        pull_sub=PullSub(batch_size=1, timeout=5.0),
        config=work_consumer(ev.subject_filter("download.completed"), max_ack_pending=1024),
        ack_policy=AckPolicy.MANUAL,
        max_workers=concurrency,
        title="extractor:download.completed",
    )
    async def on_download_completed(msg: NatsMessage) -> None:
        await handle(msg, extractor.extract)  # type: ignore[arg-type]

    return broker


async def run(settings: Settings, stop: asyncio.Event) -> None:
    assert settings.nats_url, "TUBEFLOW_NATS_URL is required"
    nc = await connect(settings.nats_url, "tubeflow-extractor")
    js = nc.jetstream()
    await ensure_topology(js)
    settings.media_dir.mkdir(parents=True, exist_ok=True)
    extractor = Extractor(
        publisher=EventPublisher(js),
        media_dir=settings.media_dir.resolve(),
        worker=worker_identity(settings),
        progress_interval=settings.progress_interval,
        progress_min_step=settings.progress_min_step,
    )
    broker = build_broker(settings.nats_url, extractor, settings.extract_concurrency)
    await broker.start()
    try:
        await stop.wait()
    finally:
        await broker.stop()
        await nc.drain()
