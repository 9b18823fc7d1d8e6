"""How every JetStream work consumer behaves: explicit consumer settings, event decoding with upcasting, in-progress
acks while work runs, ack on success, a delayed nak on an unexpected error."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from faststream.nats import NatsMessage
from nats.js import api

from contracts.events import Envelope, InvalidEvent, parse_event

log = logging.getLogger("tubeflow.consumer")

ACK_WAIT = 30.0
MAX_DELIVER = 5
# Redelivery delays after a missed ack (the first replaces ack_wait on the server); in-progress acks keep long
# work alive far below it.
BACKOFF = [30.0, 60.0, 120.0, 240.0]
KEEPALIVE = 10.0
RETRY_DELAY = 2.0


def work_consumer(filter_subject: str, *, max_ack_pending: int) -> api.ConsumerConfig:
    return api.ConsumerConfig(
        filter_subject=filter_subject,
        deliver_policy=api.DeliverPolicy.ALL,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=ACK_WAIT,
        max_deliver=MAX_DELIVER,
        backoff=BACKOFF,
        max_ack_pending=max_ack_pending,
    )


async def _keep_alive(msg: NatsMessage, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await msg.in_progress()
        except Exception as exc:  # the next try, or the redelivery, takes care of it
            log.debug("in-progress ack failed: %s", exc)


async def handle(
    msg: NatsMessage,
    work: Callable[[Envelope, int], Awaitable[None]],
    *,
    keepalive: float = KEEPALIVE,
    retry_delay: float = RETRY_DELAY,
) -> None:
    """Run ``work(event, attempt)`` for one delivery and settle the message."""
    meta = msg.raw_message.metadata
    attempt = meta.num_delivered
    try:
        event = parse_event(msg.body, seq=meta.sequence.stream)
    except InvalidEvent as exc:
        log.error("unreadable event at stream seq %s (%s): %s", meta.sequence.stream, msg.raw_message.subject, exc)
        await msg.reject()
        return
    alive = asyncio.create_task(_keep_alive(msg, keepalive))
    try:
        await work(event, attempt)
    except asyncio.CancelledError:
        await msg.nack()
        raise
    except Exception:
        log.exception("handler failed for %s %s (attempt %s)", event.type, event.job_id, attempt)
        await msg.nack(delay=retry_delay * attempt)
        return
    finally:
        alive.cancel()
    await msg.ack()
