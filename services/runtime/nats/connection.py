"""The NATS connection every tubeflow process opens: reconnects forever, logs what happens, names itself."""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

import nats
from nats.aio.client import Client as NATS

log = logging.getLogger("tubeflow.nats")


async def connect(
    url: str, name: str, *, connect_timeout: float = 5.0, on_reconnect: Callable[[], Awaitable[None]] | None = None
) -> NATS:
    async def on_error(exc: Exception) -> None:
        log.warning("nats error (%s): %s", name, exc)

    async def on_disconnect() -> None:
        log.warning("nats disconnected (%s)", name)

    async def reconnected() -> None:
        log.info("nats reconnected (%s)", name)
        if on_reconnect is not None:
            await on_reconnect()

    return await nats.connect(
        url,
        name=name,
        connect_timeout=connect_timeout,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        allow_reconnect=True,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=reconnected,
    )
