"""What every service opens before it works, in one place: the NATS connection, the topology (declared, or waited
for), and for workers the health port. Each service's ``main.py`` starts with ``open_infrastructure``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable, TypeVar

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from services.runtime.metrics import serve_health
from services.runtime.nats import connect, prepare
from services.runtime.settings import Settings
from services.runtime.tasks import cancel_until_done


@dataclass
class Infrastructure:
    settings: Settings
    nc: NATS
    js: JetStreamContext


log = logging.getLogger("tubeflow.infrastructure")
T = TypeVar("T")
# How long a stopping service waits for NATS to take its last messages.
STOP_TIMEOUT = 5.0


@contextlib.asynccontextmanager
async def open_infrastructure(
    settings: Settings,
    name: str,
    *,
    serve_health_port: bool = True,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
    stop: asyncio.Event | None = None,
    ready_details: Callable[[], dict] | None = None,
) -> AsyncIterator[Infrastructure]:
    """Connect as ``tubeflow-<name>``, prepare or wait for the topology, serve health on ``TUBEFLOW_HEALTH_PORT``
    (unless the service answers health checks itself), and on exit close all of it, draining the connection.

    Connecting retries forever (NATS may come up later) and waiting for the topology waits for `tubeflow setup`;
    ``stop`` ends either at once (StoppedWhileStarting), so a service stopped while its NATS is away exits."""
    assert settings.nats_url, "TUBEFLOW_NATS_URL is required"
    nc = await unless_stopped(
        connect(
            settings.nats_url,
            f"tubeflow-{name}",
            auth=settings.nats_auth(),
            timeout=settings.nats_connect_timeout,
            on_reconnect=on_reconnect,
        ),
        stop,
        name,
    )
    health: asyncio.AbstractServer | None = None
    try:
        js = nc.jetstream()
        await unless_stopped(prepare(js, settings), stop, name)
        if serve_health_port and settings.health_port:
            health = await serve_health(
                settings.health_host, settings.health_port, lambda: nc.is_connected, ready_details
            )
        yield Infrastructure(settings, nc, js)
    finally:
        if health is not None:
            health.close()
        await close_connection(nc)


class StoppedWhileStarting(Exception):
    """The service was asked to stop before it was connected and ready."""


async def unless_stopped(work: Awaitable[T], stop: asyncio.Event | None, name: str) -> T:
    if stop is None:
        return await work
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done():
        return task.result()
    await cancel_until_done(task)
    raise StoppedWhileStarting(f"{name} stopped while starting")


async def close_connection(nc: NATS, timeout: float = STOP_TIMEOUT) -> None:
    """Drain the connection if the server is there (bounded), then close it: a server that is gone (stopped along
    with this process, or unreachable) must not hold the process at exit while the client tries to reconnect."""
    if nc.is_connected:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.drain(), timeout)
    if not nc.is_closed:
        with contextlib.suppress(Exception):
            await nc.close()
