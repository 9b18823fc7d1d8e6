"""The NATS connection every tubeflow process opens: to any of a list of servers, with credentials and TLS if
configured, failing within a timeout at start, reconnecting forever once connected, logging what happens."""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS

from services.runtime.tasks import cancel_until_done

log = logging.getLogger("tubeflow.nats")


class NatsUnavailable(Exception):
    """No server of the list answered (or each refused us) within the connect timeout."""


def servers_of(url: str) -> list[str]:
    """``nats://a:4222,nats://b:4222``: the seed list every NATS client takes."""
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if not servers:
        raise ValueError("TUBEFLOW_NATS_URL names no server")
    return servers


@dataclass(frozen=True)
class NatsAuth:
    """How to prove who we are to NATS (all optional). Secrets come from the environment or files, never from the
    command line, and are never logged (``repr`` shows which kinds are set, not their values)."""

    user: str | None = None
    password: str | None = None
    token: str | None = None
    nkey_seed: Path | None = None
    creds: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def __repr__(self) -> str:
        kinds = [name for name in ("user", "token", "nkey_seed", "creds", "tls_ca", "tls_cert") if getattr(self, name)]
        return f"NatsAuth({', '.join(kinds) or 'none'})"

    def options(self) -> dict[str, Any]:
        """Keyword arguments for nats-py's connect (and FastStream's broker, which passes them on)."""
        out: dict[str, Any] = {}
        if self.user:
            out["user"], out["password"] = self.user, self.password or ""
        if self.token:
            out["token"] = self.token
        if self.nkey_seed:
            out["nkeys_seed"] = str(self.nkey_seed)
        if self.creds:
            out["user_credentials"] = str(self.creds)
        if self.tls_ca or self.tls_cert:
            context = ssl.create_default_context(cafile=str(self.tls_ca) if self.tls_ca else None)
            if self.tls_cert:
                context.load_cert_chain(str(self.tls_cert), str(self.tls_key) if self.tls_key else None)
            out["tls"] = context
        return out


async def connect(
    url: str,
    name: str,
    *,
    auth: NatsAuth | None = None,
    timeout: float | None = None,
    connect_timeout: float = 5.0,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
) -> NATS:
    """Connect to any server of ``url`` (a comma-separated list). With ``timeout``, no connection within it raises
    NatsUnavailable naming the servers tried and the last error; once connected, the client reconnects forever."""
    servers = servers_of(url)
    nc = NATS()
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc) or type(exc).__name__)
        del errors[:-5]
        log.warning("nats error (%s): %s", name, exc)

    async def on_disconnect() -> None:
        if nc.is_closed:  # our own close: nothing went wrong
            log.info("nats connection closed (%s)", name)
        else:
            log.warning("nats disconnected (%s)", name)

    async def reconnected() -> None:
        log.info("nats reconnected (%s)", name)
        if on_reconnect is not None:
            await on_reconnect()

    connecting = asyncio.ensure_future(
        nc.connect(
            servers=servers,
            name=name,
            connect_timeout=min(connect_timeout, timeout) if timeout else connect_timeout,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            allow_reconnect=True,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=reconnected,
            **(auth.options() if auth else {}),
        )
    )
    try:
        await asyncio.wait({connecting}, timeout=timeout)
    except BaseException:
        await cancel_until_done(connecting)
        raise
    if not connecting.done():
        await cancel_until_done(connecting)
        if not nc.is_closed:
            try:  # bounded: a refused TLS connection's close has hung
                await asyncio.wait_for(nc.close(), 2.0)
            except Exception:
                pass
        last = errors[-1] if errors else "no answer"
        raise NatsUnavailable(
            f"could not connect to NATS at {', '.join(servers)} within {timeout:g} s "
            f"(TUBEFLOW_NATS_CONNECT_TIMEOUT): {last}"
        )
    connecting.result()
    return nc


# What NATS raises while it can't answer for a moment (a node lost, a leader being elected, a reconnect): the request
# may be repeated shortly. The API answers 503 with Retry-After, a consumer logs one line and redelivers.
NATS_AWAY: tuple[type[BaseException], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
)
