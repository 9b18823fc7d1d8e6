"""How every JetStream work consumer behaves: the settings of its ConsumerSpec, event decoding with upcasting,
in-progress acks while work runs, ack on success, a delayed nak on an error, and the dead-letter stream for poison."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub

from contracts.events import Envelope, InvalidEvent, parse_event
from services.runtime.logs import CURRENT_JOB
from services.runtime.metrics import REDELIVERIES
from services.runtime.nats.connection import NATS_AWAY
from services.runtime.nats.publish import DeadLetters
from services.runtime.nats.topology import ACK_WAIT, MAX_DELIVER, STREAM, ConsumerSpec
from services.runtime.tracing import span

log = logging.getLogger("tubeflow.consumer")

RETRY_DELAY = 2.0
# A message handed back at shutdown waits this long, so that this process's subscriber is gone by then.
HANDBACK_DELAY = 2.0


class RetryLater(Exception):
    """Raised by a handler to have the message redelivered after ``delay`` seconds (a transient failure)."""

    def __init__(self, delay: float, reason: str) -> None:
        super().__init__(reason)
        self.delay = delay


class HandedBack(RetryLater):
    """The work was stopped because the queue was paused: not a failure. A ticket handler issues a new ticket for it
    (a redelivery would count as an attempt, and ten pauses would have dead-lettered the item, issue 23)."""


def work_subscriber(
    broker: NatsBroker,
    js,  # noqa: ANN001 - the JetStreamContext dead letters are published with
    spec: ConsumerSpec,
    *,
    max_workers: int,
    ack_wait: float,
    work: Callable[[Envelope, int], Awaitable[None]],
) -> None:
    """A durable pull consumer of one event type on the event stream, settled by ``handle``."""
    dead_letters = DeadLetters(js, spec.durable)

    @broker.subscriber(
        spec.filter_subject,
        stream=JStream(STREAM, declare=False),
        durable=spec.durable,
        pull_sub=PullSub(batch_size=1, timeout=5.0),
        config=spec.config(ack_wait),
        ack_policy=AckPolicy.MANUAL,
        max_workers=max_workers,
        title=f"{spec.durable}:{spec.event_type}",
    )
    async def on_message(msg: NatsMessage) -> None:
        await handle(msg, work, dead_letters=dead_letters, ack_wait=ack_wait, consumer=spec.durable)


async def _dead_letter_in_place(
    msg: NatsMessage,
    dead_letters: DeadLetters,
    raw,  # noqa: ANN001 - nats-py's Msg
    seq: int,
    attempt: int,
    reason: str,
    *,
    max_delay: float,
) -> None:
    """Publish to the dead-letter stream until it works, keeping the message in progress meanwhile.

    This runs on the last delivery: a nak would not bring the message back (max_deliver is reached), so a dead
    letter that failed to publish would be lost from both places. A shutdown cancels the wait.
    """
    delay = 0.05
    while True:
        try:
            await dead_letters.send(raw.subject, raw.data, raw.headers, seq, attempt, reason)
            return
        except Exception as exc:
            log.error("could not dead-letter stream seq %s (retrying in %.2f s): %s", seq, delay, exc)
        try:
            await msg.in_progress()
        except Exception as exc:  # the connection is away too; the next try tells
            log.debug("in-progress ack failed: %s", exc)
        await asyncio.sleep(delay)
        delay = min(max_delay * 4, delay * 2)


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
    dead_letters: DeadLetters | None = None,
    ack_wait: float = ACK_WAIT,
    retry_delay: float = RETRY_DELAY,
    max_deliver: int = MAX_DELIVER,
    consumer: str = "",
) -> None:
    """Run ``work(event, attempt)`` for one delivery and settle the message."""
    raw = msg.raw_message
    meta = raw.metadata
    attempt = meta.num_delivered
    if attempt > 1:
        REDELIVERIES.labels(consumer).inc()
    seq = meta.sequence.stream

    async def give_up(reason: str) -> None:
        if dead_letters is not None:
            await _dead_letter_in_place(msg, dead_letters, raw, seq, attempt, reason, max_delay=max(retry_delay, 0.05))
        await msg.reject()

    try:
        event = parse_event(raw.data, seq=seq)
    except InvalidEvent as exc:
        log.error("unreadable event at stream seq %s (%s): %s", seq, raw.subject, exc)
        await give_up(f"invalid event: {exc}")
        return
    bound = CURRENT_JOB.set((event.job_id, event.item_id))
    alive = asyncio.create_task(_keep_alive(msg, max(0.5, ack_wait / 3)))
    try:
        with span(
            f"tubeflow {event.type}", raw.headers or {}, job_id=event.job_id, item_id=event.item_id, attempt=attempt
        ):
            await work(event, attempt)
    except asyncio.CancelledError:
        alive.cancel()
        await msg.nack()
        raise
    except RetryLater as exc:
        alive.cancel()
        if attempt >= max_deliver:
            await give_up(f"still failing after {attempt} deliveries: {exc}")
        else:
            await msg.nack(delay=exc.delay)
        return
    except Exception as exc:
        alive.cancel()
        if isinstance(exc, NATS_AWAY):  # a node lost, a leader being elected: not a bug, no traceback
            log.warning("handler for %s %s: NATS did not answer (%s); redelivered", event.type, event.job_id, exc)
        else:
            log.exception("handler failed for %s %s (attempt %s)", event.type, event.job_id, attempt)
        if attempt >= max_deliver:
            await give_up(f"handler failed {attempt} times, last: {type(exc).__name__}: {exc}")
        else:
            await msg.nack(delay=retry_delay * attempt)
        return
    finally:
        CURRENT_JOB.reset(bound)
    alive.cancel()
    await msg.ack()
