"""The downloader service's composition root: its consumers, its adapters (yt-dlp, the media catalog) and its
handlers wired together on the shared infrastructure."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Awaitable, Callable

from nats.js.kv import KeyValue

from contracts.engine import EngineFacts, engine_key
from contracts.options import impersonate_client
from services.downloader.catalog import MediaCatalog
from services.downloader.deletion import DELETED, delete_files
from services.downloader.disk import DiskLimits, sweep
from services.downloader.handlers import MAX_PARKED_RESOLVES, Downloader
from services.downloader.probes import ProbeCarrier
from services.downloader.queue import REPRIORITIZE, START, TICKETS, Dispatcher, QueueState, RunMarkers
from services.downloader.schedule import ScheduleGate
from services.downloader.sites import SiteGate
from services.downloader.tickets import TicketLoop, worker_key
from services.engine.realsites import RealSites, ping_provider, unavailable_rules
from services.engine.slots import SlotConfig, SlotPool
from services.engine.versions import EngineFollower
from services.runtime.clock import utcnow
from services.runtime.cookies import CookieStore
from services.runtime.cooldown import Cooldowns
from services.runtime.infrastructure import open_infrastructure
from services.runtime.metrics import POT_PROVIDER_UP
from services.runtime.nats import CLAIMS_BUCKET, MEDIA_BUCKET, ConsumerSpec, EventPublisher, jobs_bucket
from services.runtime.nats.topology import (
    ENGINE_BUCKET,
    PACING_BUCKET,
    PROBES_BUCKET,
    QUEUE_BUCKET,
    SITES_BUCKET,
    WORKERS_BUCKET,
    declare_consumers,
)
from services.runtime.nats.views import SummaryReader
from services.runtime.nats.work import work_subscriber
from services.runtime.settings import Settings, worker_identity
from services.runtime.worker import cancellations_for, new_broker, serve_worker

log = logging.getLogger("tubeflow.downloader")

RESOLVE = ConsumerSpec("requested", "downloader-resolve-v1", max_ack_pending=64)
# `item.queued` facts -> tickets on the download queue (see queue); the tickets are what workers download.
ITEMS = ConsumerSpec("item.queued", "downloader-items-v1", max_ack_pending=1024)
CONSUMERS = (RESOLVE, ITEMS, START, REPRIORITIZE, DELETED, *TICKETS)
DISPATCH_CONCURRENCY = 8
# Deletions at once (a bulk delete of many jobs; each waits a moment only when its job was still running).
DELETE_CONCURRENCY = 8
RESOLVE_CONCURRENCY = 2
SWEEP_EVERY = 3600.0
# The engine's facts (and whether the PO-token provider answers) are published this often.
FACTS_EVERY = 60.0


async def run(settings: Settings, stop: asyncio.Event) -> None:
    concurrency = settings.download_concurrency
    sites = RealSites.from_settings(settings)
    # Each thread waits on one slot process running yt-dlp (see slots): the threads only pass messages.
    executor = ThreadPoolExecutor(max_workers=concurrency + RESOLVE_CONCURRENCY, thread_name_prefix="yt-dlp")
    media = SlotPool(
        concurrency + RESOLVE_CONCURRENCY,
        SlotConfig.from_settings(settings, sites),
        resolve_timeout=settings.resolve_timeout,
        download_timeout=settings.download_timeout,
    )
    loop = asyncio.get_running_loop()
    if any(target for _, target in sites.impersonate):
        # A target this engine can't send stops the service at start, naming it (a slot says what it can send).
        await loop.run_in_executor(None, media.warm_up)
        can_send = (await loop.run_in_executor(None, media.facts))["impersonate_targets"]
        missing = unavailable_rules(sites, can_send)
        if missing:
            media.close()
            raise ValueError(
                f"TUBEFLOW_IMPERSONATE: {', '.join(missing)} not available here "
                f"(clients available: {', '.join(sorted({impersonate_client(t) for t in can_send})) or 'none'})"
            )
    warm_up = loop.run_in_executor(None, media.warm_up)
    warm_up.add_done_callback(lambda f: f.cancelled() or f.exception() and log.warning("warm-up: %s", f.exception()))
    engine_state: dict[str, object] = {}
    media_dir = settings.media_dir.resolve()
    media_dir.mkdir(parents=True, exist_ok=True)

    async with open_infrastructure(
        settings, "downloader", stop=stop, ready_details=lambda: dict(engine_state)
    ) as infra:
        summaries = SummaryReader(await jobs_bucket(infra.js))
        cancellations = await cancellations_for(infra, summaries)
        worker = worker_identity(settings)
        downloader = Downloader(
            publisher=EventPublisher(infra.js),
            media=media,
            executor=executor,
            media_dir=media_dir,
            worker=worker,
            cookies=CookieStore(settings.data_dir),
            probes=ProbeCarrier(await optional_bucket(infra.js, PROBES_BUCKET)),
            max_items=settings.max_playlist_items,
            resolve_concurrency=RESOLVE_CONCURRENCY,
            progress_interval=settings.progress_interval,
            progress_min_step=settings.progress_min_step,
            attempts=settings.download_attempts,
            retry_delay=settings.retry_delay,
            cancellations=cancellations,
            catalog=MediaCatalog(
                await infra.js.key_value(MEDIA_BUCKET), await infra.js.key_value(CLAIMS_BUCKET), media_dir, worker
            ),
            disk=DiskLimits(
                max_filesize=int(settings.max_filesize),
                max_job_bytes=int(settings.max_job_bytes),
                min_free_disk=int(settings.min_free_disk),
                job_bytes=job_bytes_reader(summaries),
            ),
            cooldowns=await Cooldowns(
                infra.js, await infra.js.key_value(PACING_BUCKET), settings.cooldown_seconds(), worker
            ).start(infra.nc),
        )
        # The yt-dlp in force (an update at run time, issue 27): new slots run it, running items finish on theirs.
        engines = await EngineFollower(infra.js, settings.engine_root(), [media], worker).start(infra.nc)
        sweeper = asyncio.create_task(sweep_media(media_dir, settings.media_retention_days, stop))
        facts = asyncio.create_task(publish_engine_facts(media, sites, infra, worker, stop, engine_state))
        broker = new_broker(settings)
        dispatcher = Dispatcher(infra.js, cancelled=cancellations.heard_cancelled)
        downloader.ticket_now = dispatcher.dispatch
        subscriptions = (
            (RESOLVE, RESOLVE_CONCURRENCY + MAX_PARKED_RESOLVES, downloader.resolve),
            (ITEMS, DISPATCH_CONCURRENCY, dispatcher.dispatch),
            (START, 1, dispatcher.redispatch),
            (REPRIORITIZE, 1, dispatcher.redispatch),
            (
                DELETED,
                DELETE_CONCURRENCY,
                lambda event, attempt: delete_files(
                    infra.js, media_dir, cancellations, event, downloader.catalog, downloader.publisher
                ),
            ),
        )
        for spec, workers, work in subscriptions:
            work_subscriber(broker, infra.js, spec, max_workers=workers, ack_wait=settings.ack_wait, work=work)
        tickets = await ticket_loop(settings, infra, worker, dispatcher, downloader, cancellations)
        tickets.engine = lambda: engines.running.version
        queue_kv = await infra.js.key_value(QUEUE_BUCKET)
        workers_kv = await infra.js.key_value(WORKERS_BUCKET)
        # The download schedule (issue 29): windows, the budget shared with the other downloaders, daily caps.
        schedule = ScheduleGate(
            queue_kv, worker_key(worker), downloader.announce_waiting, offset=timedelta(seconds=settings.clock_offset)
        )
        downloader.schedule = tickets.schedule = await schedule.start(infra.nc, workers_kv)
        following = asyncio.create_task(tickets.state.follow(queue_kv, stop))
        scheduling = asyncio.create_task(schedule.run(stop))
        taking = asyncio.create_task(tickets.run(stop, workers_kv))
        await serve_worker(
            "downloader",
            infra,
            broker,
            cancellations,
            stop,
            on_stopped=lambda: (
                executor.shutdown(wait=False, cancel_futures=True),
                media.close(),
                sweeper.cancel(),
                facts.cancel(),
            ),
            drain=lambda grace: _drain(tickets, (taking, following, scheduling), grace),
        )


async def ticket_loop(settings: Settings, infra, worker: str, dispatcher, downloader, cancellations) -> TicketLoop:  # noqa: ANN001
    """The loop that takes tickets off the download queue, its consumers declared (or waited for, after setup)."""
    # Declared like the event consumers the broker subscribes with: created when missing, whatever TUBEFLOW_DECLARE.
    _, problems = await declare_consumers(infra.js, TICKETS, settings.ack_wait)
    for problem in problems:
        log.warning("%s", problem)
    state = QueueState()
    state.on_pause_now(lambda _now: cancellations.trip_kind("download", "paused"))
    return TicketLoop(
        nc=infra.nc,
        js=infra.js,
        worker=worker,
        concurrency=settings.download_concurrency,
        state=state,
        dispatcher=dispatcher,
        markers=RunMarkers(await infra.js.key_value(CLAIMS_BUCKET)),
        work=downloader.download,
        ack_wait=settings.ack_wait,
        cancellations=cancellations,
        gate=SiteGate.from_settings(
            settings,
            await infra.js.key_value(SITES_BUCKET),
            worker,
            downloader,
            await infra.js.key_value(PACING_BUCKET),
        ),
    )


async def _drain(tickets: TicketLoop, loops: tuple[asyncio.Task, ...], grace: float) -> None:
    await tickets.drain(grace)
    for task in loops:
        task.cancel()
    await asyncio.gather(*loops, return_exceptions=True)


def job_bytes_reader(summaries: SummaryReader) -> Callable[[str], Awaitable[int]]:
    """Bytes a job's downloads hold so far, from its summary in the read models (0 before it is projected)."""

    async def job_bytes(job_id: str) -> int:
        summary = await summaries.get(job_id)
        return summary.download.bytes_done if summary is not None else 0

    return job_bytes


async def optional_bucket(js, name: str) -> KeyValue | None:  # noqa: ANN001
    """A bucket newer than the deployment's last `tubeflow setup` may be missing: then its feature is off."""
    try:
        return await js.key_value(name)
    except Exception as exc:
        log.warning("no %s bucket (run `tubeflow setup`): %s", name, exc)
        return None


async def publish_engine_facts(media: SlotPool, sites: RealSites, infra, worker: str, stop, state: dict) -> None:  # noqa: ANN001
    """What this downloader's engine can do on real sites (asked of a slot once), with whether the PO-token provider
    answers (asked every FACTS_EVERY s), into the engine bucket for the API, the page and the doctor; what a real site
    needs and is missing is said once at start, in one line. Readiness reports the provider, never fails on it (other
    sites don't need it)."""
    try:
        facts = EngineFacts.model_validate(await asyncio.to_thread(media.facts))
    except Exception as exc:  # a slot that can't start: the downloads will say so; no facts to publish
        log.warning("real sites: the engine's facts could not be read: %s", exc)
        return
    facts.worker = worker
    kv = await optional_bucket(infra.js, ENGINE_BUCKET)
    first = True
    while not stop.is_set():
        facts.pot_provider = await asyncio.to_thread(ping_provider, sites.pot_provider_url)
        facts.checked_at = utcnow()
        if facts.pot_provider.url:
            state["pot_provider"] = "answering" if facts.pot_provider.answering else "not answering"
            POT_PROVIDER_UP.set(1 if facts.pot_provider.answering else 0)
        if first:
            problems = facts.problems(facts.checked_at.date())
            if problems:
                log.warning("real sites: %s — `tubeflow doctor` says more", " | ".join(problems))
            first = False
        if kv is not None:
            with contextlib.suppress(Exception):
                await kv.put(engine_key(worker), facts.model_dump_json().encode())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), FACTS_EVERY)
    if kv is not None:  # a downloader that stops takes its facts along
        with contextlib.suppress(Exception):
            await asyncio.wait_for(kv.delete(engine_key(worker)), 2.0)


async def sweep_media(media_dir: Path, retention_days: float, stop: asyncio.Event) -> None:
    """TUBEFLOW_MEDIA_RETENTION_DAYS: every hour (and at start), the media of jobs untouched that long is deleted."""
    if retention_days <= 0:
        return
    while not stop.is_set():
        try:
            await asyncio.to_thread(sweep, media_dir, retention_days)
        except Exception as exc:  # a folder that went away meanwhile, a permission: the next sweep tries again
            log.warning("media sweep failed: %s", exc)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), SWEEP_EVERY)
