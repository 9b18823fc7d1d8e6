"""The progress projector's composition root: one durable reader of the whole stream per replica, folding into the
read-model bucket."""

from __future__ import annotations

import asyncio
import socket
from typing import Awaitable, Callable

from nats.js import JetStreamContext

from contracts.events import CancelRequested, Envelope, encode_event, make_event, subject
from contracts.fold import apply_or_set_aside
from contracts.ids import step_event_id
from contracts.views import VIEW_TOO_LARGE, JobView
from services.progress.projector import Projector, durable_name, project_stream
from services.runtime.clock import utcnow
from services.runtime.infrastructure import open_infrastructure
from services.runtime.nats import DeadLetters, EventPublisher, InOrderReader, jobs_bucket, read_job_events
from services.runtime.settings import Settings

# The projector's consumers are its own (one per replica, see durable_name): no shared work consumer to declare.
CONSUMERS = ()


def stop_cut_job(js: JetStreamContext) -> Callable[[str, list[Envelope], str], Awaitable[None]]:
    """When a job's view is cut (see limits): its last event goes to the dead-letter stream with the reason, and a
    `cancel.requested` stops its work (the same id as a user's cancel: one of them is kept)."""
    dead_letters, publisher = DeadLetters(js, "progress"), EventPublisher(js)

    async def on_cut(job_id: str, events: list[Envelope], reason: str) -> None:
        last = events[-1]
        await dead_letters.send(
            subject(job_id, last.type), encode_event(last), None, last.seq or 0, 1, f"{VIEW_TOO_LARGE}: {reason}"
        )
        await publisher.publish(
            make_event(
                "cancel.requested",
                job_id=job_id,
                data=CancelRequested(reason=VIEW_TOO_LARGE),
                occurred_at=utcnow(),
                event_id=step_event_id(job_id, "cancel.requested"),
            )
        )

    return on_cut


def set_aside(js: JetStreamContext) -> Callable[[Envelope, str], Awaitable[None]]:
    """An event the fold could not apply goes to the dead-letter stream with the reason; the projector goes on."""
    dead_letters = DeadLetters(js, "progress")

    async def on_set_aside(event: Envelope, reason: str) -> None:
        await dead_letters.send(
            subject(event.job_id, event.type), encode_event(event), None, event.seq or 0, 1, f"unfoldable: {reason}"
        )

    return on_set_aside


def refolder(js: JetStreamContext) -> Callable[[str], Awaitable[JobView | None]]:
    """A job's view folded afresh from all of its events (for a stored view whose parts disagree, see store)."""

    async def refold(job_id: str) -> JobView | None:
        view = None
        for stored in await read_job_events(js, job_id):
            if stored.event is not None:
                view, _ = apply_or_set_aside(view, stored.event)
        return view

    return refold


async def run(settings: Settings, stop: asyncio.Event) -> None:
    async with open_infrastructure(settings, "progress", stop=stop) as infra:
        projector = Projector(
            await jobs_bucket(infra.js),
            max_payload=infra.nc.max_payload,
            on_cut=stop_cut_job(infra.js),
            refold=refolder(infra.js),
            on_set_aside=set_aside(infra.js),
        )
        reader = InOrderReader(infra.js, durable_name(settings.worker_name or socket.gethostname()))
        await project_stream(projector, reader, stop)
