"""The downloader service: a FastStream app with two durable pull consumers on the event stream."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub

from contracts import events as ev
from services.downloader.handlers import Downloader
from services.downloader.ytdlp import YtDlp
from services.runtime.consumers import handle, work_consumer
from services.runtime.eventstore import STREAM, EventPublisher, connect, ensure_topology
from services.runtime.settings import Settings, worker_identity

RESOLVE_DURABLE = "downloader-resolve-v1"
ITEMS_DURABLE = "downloader-items-v1"
RESOLVE_CONCURRENCY = 2


def build_broker(url: str, downloader: Downloader, concurrency: int) -> NatsBroker:
    broker = NatsBroker(
        url, logger=logging.getLogger("tubeflow.faststream"), log_level=logging.DEBUG, max_reconnect_attempts=-1
    )
    stream = JStream(STREAM, declare=False)

    @broker.subscriber(
        ev.subject_filter("requested"),
        stream=stream,
        durable=RESOLVE_DURABLE,
        pull_sub=PullSub(batch_size=1, timeout=5.0),
        config=work_consumer(ev.subject_filter("requested"), max_ack_pending=64),
        ack_policy=AckPolicy.MANUAL,
        max_workers=RESOLVE_CONCURRENCY,
        title="downloader:requested",
    )
    async def on_requested(msg: NatsMessage) -> None:
        await handle(msg, lambda event, attempt: downloader.resolve(event))  # type: ignore[arg-type]

    @broker.subscriber(
        ev.subject_filter("item.queued"),
        stream=stream,
        durable=ITEMS_DURABLE,
        pull_sub=PullSub(batch_size=1, timeout=5.0),
        config=work_consumer(ev.subject_filter("item.queued"), max_ack_pending=1024),
        ack_policy=AckPolicy.MANUAL,
        max_workers=concurrency,
        title="downloader:item.queued",
    )
    async def on_item_queued(msg: NatsMessage) -> None:
        await handle(msg, downloader.download)  # type: ignore[arg-type]

    return broker


async def run(settings: Settings, stop: asyncio.Event) -> None:
    assert settings.nats_url, "TUBEFLOW_NATS_URL is required"
    nc = await connect(settings.nats_url, "tubeflow-downloader")
    js = nc.jetstream()
    await ensure_topology(js)
    concurrency = settings.download_concurrency
    executor = ThreadPoolExecutor(max_workers=concurrency + RESOLVE_CONCURRENCY, thread_name_prefix="yt-dlp")
    settings.media_dir.mkdir(parents=True, exist_ok=True)
    downloader = Downloader(
        publisher=EventPublisher(js),
        media=YtDlp(size=concurrency + RESOLVE_CONCURRENCY),
        executor=executor,
        media_dir=settings.media_dir.resolve(),
        worker=worker_identity(settings),
        max_items=settings.max_playlist_items,
        progress_interval=settings.progress_interval,
        progress_min_step=settings.progress_min_step,
    )
    broker = build_broker(settings.nats_url, downloader, concurrency)
    await broker.start()
    try:
        await stop.wait()
    finally:
        await broker.stop()
        executor.shutdown(wait=False, cancel_futures=True)
        await nc.drain()
