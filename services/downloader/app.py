"""The downloader service: a FastStream app with two durable pull consumers on the event stream."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub

from contracts import events as ev
from services.downloader.handlers import Downloader
from services.downloader.ytdlp import YtDlp
from services.runtime.addresses import AddressPolicy, parse_networks
from services.runtime.consumers import handle, work_consumer
from services.runtime.eventstore import STREAM, DeadLetters, EventPublisher
from services.runtime.settings import Settings, worker_identity
from services.runtime.worker import WorkerContext, new_broker, run_worker

RESOLVE_DURABLE = "downloader-resolve-v1"
ITEMS_DURABLE = "downloader-items-v1"
RESOLVE_CONCURRENCY = 2


def build_broker(url: str, downloader: Downloader, settings: Settings, context: WorkerContext) -> NatsBroker:
    broker = new_broker(url)
    stream = JStream(STREAM, declare=False)
    ack_wait = settings.ack_wait
    resolve_dlq = DeadLetters(context.js, RESOLVE_DURABLE)
    items_dlq = DeadLetters(context.js, ITEMS_DURABLE)

    @broker.subscriber(
        ev.subject_filter("requested"),
        stream=stream,
        durable=RESOLVE_DURABLE,
        pull_sub=PullSub(batch_size=1, timeout=5.0),
        config=work_consumer(ev.subject_filter("requested"), max_ack_pending=64, ack_wait=ack_wait),
        ack_policy=AckPolicy.MANUAL,
        max_workers=RESOLVE_CONCURRENCY,
        title="downloader:requested",
    )
    async def on_requested(msg: NatsMessage) -> None:
        await handle(msg, downloader.resolve, dead_letters=resolve_dlq, ack_wait=ack_wait)  # type: ignore[arg-type]

    @broker.subscriber(
        ev.subject_filter("item.queued"),
        stream=stream,
        durable=ITEMS_DURABLE,
        pull_sub=PullSub(batch_size=1, timeout=5.0),
        config=work_consumer(ev.subject_filter("item.queued"), max_ack_pending=1024, ack_wait=ack_wait),
        ack_policy=AckPolicy.MANUAL,
        max_workers=settings.download_concurrency,
        title="downloader:item.queued",
    )
    async def on_item_queued(msg: NatsMessage) -> None:
        await handle(msg, downloader.download, dead_letters=items_dlq, ack_wait=ack_wait)  # type: ignore[arg-type]

    return broker


async def run(settings: Settings, stop: asyncio.Event) -> None:
    concurrency = settings.download_concurrency
    executor = ThreadPoolExecutor(max_workers=concurrency + RESOLVE_CONCURRENCY, thread_name_prefix="yt-dlp")
    policy = AddressPolicy(settings.allow_private_urls, parse_networks(settings.allowed_networks))

    def build(context: WorkerContext) -> NatsBroker:
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
        )
        return build_broker(settings.nats_url, downloader, settings, context)  # type: ignore[arg-type]

    await run_worker(
        "downloader", settings, stop, build, on_stopped=lambda: executor.shutdown(wait=False, cancel_futures=True)
    )
