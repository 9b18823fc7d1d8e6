"""The downloader service: a FastStream app with two durable pull consumers on the event stream."""

from __future__ import annotations

import asyncio
import logging
import sys
from concurrent.futures import ThreadPoolExecutor

from faststream.nats import NatsBroker

from services.downloader.catalog import MediaCatalog
from services.downloader.handlers import Downloader
from services.downloader.ytdlp import YtDlp
from services.runtime.consumers import work_subscriber
from services.runtime.eventstore import CLAIMS_BUCKET, MEDIA_BUCKET, EventPublisher
from services.runtime.settings import Settings, worker_identity
from services.runtime.worker import WorkerContext, new_broker, run_worker

RESOLVE_DURABLE = "downloader-resolve-v1"
ITEMS_DURABLE = "downloader-items-v1"
log = logging.getLogger("tubeflow.downloader")
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


# yt-dlp's download threads take the GIL after every socket read; with Python's default 5 ms switch interval the
# event loop (progress reports, acks, cancels) waits behind them. 1 ms keeps its waits short.
SWITCH_INTERVAL = 0.001


async def run(settings: Settings, stop: asyncio.Event) -> None:
    concurrency = settings.download_concurrency
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
    executor = ThreadPoolExecutor(max_workers=concurrency + RESOLVE_CONCURRENCY, thread_name_prefix="yt-dlp")
    policy = settings.address_policy()

    media = YtDlp(size=concurrency + RESOLVE_CONCURRENCY, policy=policy)
    warm_up = asyncio.get_running_loop().run_in_executor(executor, media.warm_up)
    warm_up.add_done_callback(lambda f: f.cancelled() or f.exception() and log.warning("warm-up: %s", f.exception()))

    async def build(context: WorkerContext) -> NatsBroker:
        catalog = MediaCatalog(
            await context.js.key_value(MEDIA_BUCKET),
            await context.js.key_value(CLAIMS_BUCKET),
            settings.media_dir.resolve(),
            worker_identity(settings),
        )
        downloader = Downloader(
            publisher=EventPublisher(context.js),
            media=media,
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
