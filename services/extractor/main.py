"""The extractor service's composition root: its consumer and the ffmpeg handler wired together on the shared
infrastructure."""

from __future__ import annotations

import asyncio

from services.extractor.handlers import Extractor
from services.runtime.infrastructure import open_infrastructure
from services.runtime.nats import ConsumerSpec, EventPublisher
from services.runtime.nats.work import work_subscriber
from services.runtime.settings import Settings, worker_identity
from services.runtime.worker import cancellations_for, new_broker, serve_worker

COMPLETED_DOWNLOADS = ConsumerSpec("download.completed", "extractor-v1", max_ack_pending=1024)
CONSUMERS = (COMPLETED_DOWNLOADS,)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    media_dir = settings.media_dir.resolve()
    media_dir.mkdir(parents=True, exist_ok=True)
    async with open_infrastructure(settings, "extractor", stop=stop) as infra:
        cancellations = await cancellations_for(infra)
        extractor = Extractor(
            publisher=EventPublisher(infra.js),
            media_dir=media_dir,
            worker=worker_identity(settings),
            progress_interval=settings.progress_interval,
            progress_min_step=settings.progress_min_step,
            cancellations=cancellations,
            max_filesize=int(settings.max_filesize),
        )
        broker = new_broker(settings)
        work_subscriber(
            broker,
            infra.js,
            COMPLETED_DOWNLOADS,
            max_workers=settings.extract_concurrency,
            ack_wait=settings.ack_wait,
            work=extractor.extract,
        )
        await serve_worker("extractor", infra, broker, cancellations, stop)
