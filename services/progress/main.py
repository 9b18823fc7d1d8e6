"""The progress projector's composition root: one durable reader of the whole stream per replica, folding into the
read-model bucket."""

from __future__ import annotations

import asyncio
import socket

from services.progress.projector import Projector, durable_name, project_stream
from services.runtime.infrastructure import open_infrastructure
from services.runtime.nats import InOrderReader, jobs_bucket
from services.runtime.settings import Settings

# The projector's consumers are its own (one per replica, see durable_name): no shared work consumer to declare.
CONSUMERS = ()


async def run(settings: Settings, stop: asyncio.Event) -> None:
    async with open_infrastructure(settings, "progress") as infra:
        projector = Projector(await jobs_bucket(infra.js))
        reader = InOrderReader(infra.js, durable_name(settings.worker_name or socket.gethostname()))
        await project_stream(projector, reader, stop)
