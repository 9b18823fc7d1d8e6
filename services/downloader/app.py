"""The downloader service: a FastStream app with two durable pull consumers on the event stream."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from faststream.nats import NatsBroker

from services.downloader.catalog import MediaCatalog
from services.downloader.handlers import Downloader
from services.downloader.ytdlp import YtDlp
from services.runtime.addresses import AddressPolicy, parse_networks
from services.runtime.consumers import work_subscriber
from services.runtime.eventstore import CLAIMS_BUCKET, MEDIA_BUCKET, EventPublisher
from services.runtime.settings import Settings, worker_identity
from services.runtime.worker import WorkerContext, new_broker, run_worker

RESOLVE_DURABLE = "downloader-resolve-v1"
ITEMS_DURABLE = "downloader-items-v1"
RESOLVE_CONCURRENCY = 2


def build_broker(url: str, downloader: Downloader, settings: Settings, context: WorkerContext) -> NatsBroker:
    broker = new_broker(url)
    work_subscriber(
        broker,
        context.js,
        event_type="requested",
        durable=RESOLVE_DURABLE,
        max_workers=RESOLVE_CONCURRENCY,
        max_ack_pending=64,
        ack_wait=settings.ack_wait,
        work=downloader.resolve,  # type: ignore[arg-type]
    )
    work_subscriber(
        broker,
        context.js,
        event_type="item.queued",
        durable=ITEMS_DURABLE,
        max_workers=settings.download_concurrency,
        max_ack_pending=1024,
        ack_wait=settings.ack_wait,
        work=downloader.download,  # type: ignore[arg-type]
    )
    return broker


async def run(settings: Settings, stop: asyncio.Event) -> None:
    concurrency = settings.download_concurrency
    executor = ThreadPoolExecutor(max_workers=concurrency + RESOLVE_CONCURRENCY, thread_name_prefix="yt-dlp")
    policy = AddressPolicy(settings.allow_private_urls, parse_networks(settings.allowed_networks))

    async def build(context: WorkerContext) -> NatsBroker:
        catalog = MediaCatalog(
            await context.js.key_value(MEDIA_BUCKET),
            await context.js.key_value(CLAIMS_BUCKET),
            settings.media_dir.resolve(),
            worker_identity(settings),
        )
        downloader = Downloader(
            publisher=EventPublisher(context.js),
            media=YtDlp(size=concurrency + RESOLVE_CONCURRENCY, policy=policy),
            executor=executor,
            media_dir=settings.media_dir.resolve(),
            worker=worker_identity(settings),
            max_items=settings.max_playlist_items,
            progress_interval=settings.progress_interval,
            progress_min_step=settings.progress_min_step,
            attempts=settings.download_attempts,
            retry_delay=settings.retry_delay,
            cancellations=context.cancellations,
            catalog=catalog,
        )
        return build_broker(settings.nats_url, downloader, settings, context)  # type: ignore[arg-type]

    await run_worker(
        "downloader", settings, stop, build, on_stopped=lambda: executor.shutdown(wait=False, cancel_futures=True)
    )
