"""The lifecycle both worker services share: listen for cancels, run a FastStream broker until ``stop``, then hand
back or finish in-flight work within the grace period."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from faststream.nats import NatsBroker

from contracts.views import VIEW_TOO_LARGE
from services.runtime.cancellation import Cancellations
from services.runtime.infrastructure import STOP_TIMEOUT, Infrastructure
from services.runtime.metrics import IN_FLIGHT, freeze_startup_objects
from services.runtime.nats import jobs_bucket
from services.runtime.nats.connection import servers_of
from services.runtime.nats.views import SummaryReader
from services.runtime.settings import Settings
from services.runtime.tasks import cancel_until_done

log = logging.getLogger("tubeflow.worker")


def new_broker(settings: Settings) -> NatsBroker:
    return NatsBroker(
        servers_of(settings.nats_url or ""),
        logger=logging.getLogger("tubeflow.faststream"),
        log_level=logging.DEBUG,
        max_reconnect_attempts=-1,
        **settings.nats_auth().options(),
    )


async def cancellations_for(infra: Infrastructure, summaries: SummaryReader | None = None) -> Cancellations:
    """Cancellations that hear `cancel.requested` at once and look up jobs cancelled while this process was away
    (``summaries``: the reader of job summaries to share with the process's other checks)."""
    reader = summaries or SummaryReader(await jobs_bucket(infra.js))

    async def cancelled_in_store(job_id: str) -> bool:
        # The summary only (the items are skipped, not built): this runs before every download, and a playlist's
        # view can hold a thousand items.
        summary = await reader.get(job_id)
        if summary is None:
            return False
        # A job whose view was cut (too big to store) is stopped like a cancelled one.
        return summary.status == "cancelled" or (summary.error is not None and summary.error.code == VIEW_TOO_LARGE)

    cancellations = Cancellations(cancelled_in_store)
    await cancellations.subscribe(infra.nc)
    return cancellations


async def serve_worker(
    name: str,
    infra: Infrastructure,
    broker: NatsBroker,
    cancellations: Cancellations,
    stop: asyncio.Event,
    on_stopped: Callable[[], None] | None = None,
    drain: Callable[[float], Awaitable[None]] | None = None,
) -> None:
    """Run ``broker`` until ``stop``; then trip every running task's token and give it the grace period."""
    IN_FLIGHT.labels(name).set_function(lambda: cancellations.running)
    # A stop while the broker connects (its NATS may be gone) ends the start instead of waiting for it.
    starting = asyncio.ensure_future(broker.start())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        log.info("%s stopped while starting", name)
        await cancel_until_done(starting)
        if on_stopped is not None:
            on_stopped()
        return
    stopped.cancel()
    starting.result()
    freeze_startup_objects()
    try:
        await stop.wait()
    finally:
        log.info("%s stopping: handing back %d running task(s)", name, cancellations.running)
        await cancellations.shutdown(infra.settings.shutdown_grace)
        if drain is not None:
            # Work taken outside the broker (the download queue's loop) is settled before the connection goes.
            try:
                await asyncio.wait_for(drain(infra.settings.shutdown_grace), STOP_TIMEOUT)
            except Exception as exc:
                log.warning("%s: in-flight work did not settle: %s", name, exc or type(exc).__name__)
        # Bounded: with the NATS server gone the broker's drain would wait for a reconnect that never comes.
        try:
            await asyncio.wait_for(broker.stop(), STOP_TIMEOUT)
        except Exception as exc:
            log.warning("%s: the broker did not stop cleanly: %s", name, exc or type(exc).__name__)
        if on_stopped is not None:
            on_stopped()
