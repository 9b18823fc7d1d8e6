"""The API's composition root: the Litestar app (routes, guard, error shape, dependencies) and its lifespan, which
opens the shared infrastructure and wires the read side, the write side and the hub."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, AsyncIterator, Callable

import uvicorn
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.plugins.pydantic import PydanticPlugin

from services.api.access import EndedSessions, RateLimiter, StreamLimiter, auth_guard, host_guard, same_site_guard
from services.api.admission import Admission
from services.api.commands import JobCommands
from services.api.engine import EngineBook
from services.api.errors import EXCEPTION_HANDLERS
from services.api.hub import JobHub
from services.api.identity import TokenBook
from services.api.oidc import OidcClient
from services.api.presets import PresetBook, read_only_presets
from services.api.queue import QueueControl
from services.api.reads import JobReads
from services.api.retention import run_retention
from services.api.routes import (
    archive,
    controls,
    cookies,
    feeds,
    health,
    info,
    library,
    page,
    presets,
    session,
    signin,
    subscriptions,
    webhooks,
)
from services.api.routes import engine as engine_routes
from services.api.routes import queue as queue_routes
from services.api.routes import tokens as tokens_routes
from services.api.routes.jobs import JobsController
from services.api.routes.media import get_media
from services.api.routes.streams import StreamsController
from services.api.sessions import SessionBook
from services.runtime.cookies import CookieStore
from services.runtime.feeds import FeedStore
from services.runtime.infrastructure import open_infrastructure
from services.runtime.metrics import LoopLagMonitor, freeze_startup_objects
from services.runtime.nats import IDEMPOTENCY_BUCKET, EventPublisher, jobs_bucket
from services.runtime.nats.topology import (
    DELIVERIES_BUCKET,
    FEEDS_BUCKET,
    SESSIONS_BUCKET,
    TOKENS_BUCKET,
    WEBHOOKS_BUCKET,
)
from services.runtime.schedule import read_schedule_file, schedule_clock
from services.runtime.settings import Settings
from services.runtime.subscriptions import SubscriptionBook
from services.runtime.tasks import cancel_until_done
from services.runtime.webhooks import WebhookStore

# The API serves no work consumer: it publishes commands and reads the read models.
CONSUMERS = ()
# What handlers get injected, by name; the lifespan puts the live ones in the app's state.
_PROVIDED = (
    "commands",
    "reads",
    "hub",
    "nc",
    "settings",
    "address_policy",
    "rate_limiter",
    "stream_limiter",
    "cookie_store",
    "presets",
    "admission",
    "queue",
    "webhooks",
    "deliveries",
    "subscriptions",
    "engines",
    "tokens",
    "feeds",
)


def _provider(name: str) -> Provide:
    async def provide(state: State) -> Any:
        return state[name]

    return Provide(provide)


def _lifespan(
    settings: Settings, book: PresetBook, ended: EndedSessions, tokens: TokenBook, sessions: SessionBook
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """What the app holds while it runs: the NATS connection, the hub, the read and write sides, the retention sweep."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        hub = JobHub()
        kv_ref: list = []

        async def on_reconnect() -> None:
            if kv_ref:
                await hub.refresh(kv_ref[0])

        # The API answers health checks on its own port.
        async with open_infrastructure(settings, "api", serve_health_port=False, on_reconnect=on_reconnect) as infra:
            kv = await jobs_bucket(infra.js)
            kv_ref.append(kv)
            await book.start(infra.js)
            await hub.start(infra.nc, kv)
            followed = SubscriptionBook()
            await followed.start(infra.js)
            await ended.start(infra.nc, await infra.js.key_value(IDEMPOTENCY_BUCKET))
            await tokens.start(infra.nc, await infra.js.key_value(TOKENS_BUCKET))
            await sessions.start(infra.nc, await infra.js.key_value(SESSIONS_BUCKET))
            reads = JobReads(infra.js, kv)
            app.state.engines.start(infra.js)
            app.state.update(
                nc=infra.nc,
                queue=await _schedule_from_file(
                    settings, await QueueControl.open(infra.js, now=schedule_clock(settings.clock_offset))
                ),
                webhooks=WebhookStore(await infra.js.key_value(WEBHOOKS_BUCKET)),
                feeds=FeedStore(await infra.js.key_value(FEEDS_BUCKET)),
                deliveries=await infra.js.key_value(DELIVERIES_BUCKET),
                hub=hub,
                subscriptions=followed,
                reads=reads,
                commands=JobCommands(
                    EventPublisher(infra.js),
                    await infra.js.key_value(IDEMPOTENCY_BUCKET),
                    find=reads.get,
                    on_accepted=hub.accept,
                    auto_start=settings.auto_start,
                ),
            )
            freeze_startup_objects()
            lag = LoopLagMonitor().start()
            stopping = asyncio.Event()
            retention = asyncio.create_task(
                run_retention(
                    hub,
                    reads,
                    app.state.commands,
                    settings.job_retention_days,
                    settings.retention_delete_files,
                    stopping,
                    every=settings.retention_every,
                )
            )
            try:
                yield
            finally:
                stopping.set()
                await cancel_until_done(retention)
                lag.stop()
                await hub.stop()
                await book.stop()
                await followed.stop()
                await ended.stop()
                await tokens.stop()
                await sessions.stop()

    return lifespan


async def _schedule_from_file(settings: Settings, queue: QueueControl) -> QueueControl:
    """TUBEFLOW_SCHEDULE_FILE's schedule put in force at start (when it differs from the one in force: a restart of
    an unchanged file changes nothing; a later PUT holds until the file changes or the API starts again)."""
    if settings.schedule_file is not None:
        wanted = read_schedule_file(settings.schedule_file)
        if (await queue.schedule()).schedule != wanted:
            await queue.set_schedule(wanted, "TUBEFLOW_SCHEDULE_FILE")
            logging.getLogger("tubeflow.api").info("download schedule from %s in force", settings.schedule_file)
    return queue


def create_app(settings: Settings) -> Litestar:
    settings.media_dir.mkdir(parents=True, exist_ok=True)
    # Read (and checked) before anything starts: a bad TUBEFLOW_PRESETS_FILE stops the API with its reason.
    book = PresetBook(read_only_presets(settings.presets_file, presets.check_preset))
    # Made once: parsing TUBEFLOW_ALLOWED_NETWORKS is not per-request work; one store serves the routes and admission.
    policy, cookies_on_disk = settings.address_policy(), CookieStore(settings.data_dir)
    ended = EndedSessions()
    engines = EngineBook()
    tokens = TokenBook()
    sessions = SessionBook()
    return Litestar(
        route_handlers=[
            JobsController,
            StreamsController,
            get_media,
            *health.ROUTES,
            *session.ROUTES,
            *page.ROUTES,
            *cookies.ROUTES,
            *presets.ROUTES,
            *info.ROUTES,
            *archive.ROUTES,
            *controls.ROUTES,
            *queue_routes.ROUTES,
            *webhooks.ROUTES,
            *subscriptions.ROUTES,
            *feeds.ROUTES,
            *library.ROUTES,
            *engine_routes.ROUTES,
            *tokens_routes.ROUTES,
            *signin.ROUTES,
        ],
        lifespan=[_lifespan(settings, book, ended, tokens, sessions)],
        state=State(
            {
                "settings": settings,
                "rate_limiter": RateLimiter(settings.rate_limit),
                "stream_limiter": StreamLimiter(settings.sse_max_streams, settings.sse_max_streams_per_client),
                "address_policy": policy,
                "cookie_store": cookies_on_disk,
                "ended_sessions": ended,
                "presets": book,
                "admission": Admission(settings, policy, cookies_on_disk, book, engines),
                "engines": engines,
                "tokens": tokens,
                "sessions": sessions,
                "oidc": OidcClient.from_settings(settings) if settings.auth_mode() == "oidc" else None,
                # Sign-ins begun per client and minute: each keeps a record for 10 minutes.
                "login_limiter": RateLimiter(30, what="sign-ins begun"),
            }
        ),
        guards=[
            host_guard(settings.allowed_host_list()),
            auth_guard(settings, ended, tokens, sessions),
            same_site_guard(settings.allowed_origin_list()),
        ],
        dependencies={name: _provider(name) for name in _PROVIDED},
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        openapi_config=OpenAPIConfig(title="tubeflow", version="0.1.0", path="/schema"),
        # Fields are written under their aliases (a schedule window's `from`, a Python keyword).
        plugins=[PydanticPlugin(prefer_alias=True)],
        request_max_body_size=64 * 1024,
        logging_config=None,
    )


def refuse_open_public(settings: Settings, host: str) -> None:
    """Binding an address other machines reach without authentication refuses to start, unless the operator said
    TUBEFLOW_AUTH=none on purpose (issue 28)."""
    if settings.auth_mode() != "none" or settings.auth == "none":
        return
    try:
        local = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        local = host == "localhost"
    if not local:
        raise ValueError(
            f"the API would serve {host} to anyone without authentication: set TUBEFLOW_API_TOKEN, or "
            "TUBEFLOW_AUTH=forward (behind a signing-in proxy), or TUBEFLOW_AUTH=none to serve it open on purpose"
        )


async def run(settings: Settings, stop: asyncio.Event, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the API with uvicorn until ``stop``."""
    refuse_open_public(settings, host)

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # type: ignore[override]
            # Signals belong to the tubeflow process, which stops every service together.
            yield

    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=5,
        # X-Forwarded-For is believed only from the proxies named (uvicorn would believe it from 127.0.0.1, so one
        # local client could take a fresh rate-limit bucket per header value).
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or "",
    )
    server = Server(config)

    async def serve_or_fail() -> None:
        try:
            await server.serve()
        except SystemExit as exc:  # uvicorn exits when it can't bind; here that is one failed service
            raise RuntimeError(f"the API could not start on {host}:{port}") from exc

    serve = asyncio.create_task(serve_or_fail())
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({serve, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if serve in done:
        stopper.cancel()
        serve.result()
        if not server.started:
            raise RuntimeError(f"the API could not start on {host}:{port}")
        return
    server.should_exit = True
    await serve
