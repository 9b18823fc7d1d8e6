"""What every service opens before it works, in one place: the NATS connection, the topology (declared, or waited
for), and for workers the health port. Each service's ``main.py`` starts with ``open_infrastructure``."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from services.runtime.metrics import serve_health
from services.runtime.nats import connect, prepare
from services.runtime.settings import Settings


@dataclass
class Infrastructure:
    settings: Settings
    nc: NATS
    js: JetStreamContext


@contextlib.asynccontextmanager
async def open_infrastructure(
    settings: Settings,
    name: str,
    *,
    serve_health_port: bool = True,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[Infrastructure]:
    """Connect as ``tubeflow-<name>``, prepare or wait for the topology, serve health on ``TUBEFLOW_HEALTH_PORT``
    (unless the service answers health checks itself), and on exit close all of it, draining the connection."""
    assert settings.nats_url, "TUBEFLOW_NATS_URL is required"
    nc = await connect(settings.nats_url, f"tubeflow-{name}", on_reconnect=on_reconnect)
    health: asyncio.AbstractServer | None = None
    try:
        js = nc.jetstream()
        await prepare(js, settings)
        if serve_health_port and settings.health_port:
            health = await serve_health(settings.health_host, settings.health_port, lambda: nc.is_connected)
        yield Infrastructure(settings, nc, js)
    finally:
        if health is not None:
            health.close()
        await nc.drain()
