"""Reading the event stream back: stored events decoded with upcasting, a fast pull reader, and short reads of one
job's events or the whole stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, AsyncIterator

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from contracts.events import ALL_EVENTS, Envelope, InvalidEvent, job_filter, parse_event
from services.runtime.nats.topology import STREAM

log = logging.getLogger("tubeflow.nats")


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    subject: str
    data: bytes
    event: Envelope | None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        if self.event is None:
            return {
                "seq": self.seq,
                "type": "invalid",
                "occurred_at": None,
                "item_id": None,
                "data": {"subject": self.subject, "reason": self.error},
            }
        body = self.event.model_dump(mode="json")
        return {
            "seq": self.seq,
            "type": self.event.type,
            "occurred_at": body["occurred_at"],
            "item_id": self.event.item_id,
            "actor": self.event.actor,
            "data": body["data"],
        }


def decode(seq: int, subject_: str, data: bytes) -> StoredEvent:
    try:
        return StoredEvent(seq, subject_, data, parse_event(data, seq=seq))
    except InvalidEvent as exc:
        return StoredEvent(seq, subject_, data, None, str(exc))


def stream_seq(msg: Msg) -> int:
    """The stream sequence of a JetStream message, read from its ack subject without building nats-py's Metadata
    (``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>...``, or with domain and account hash: 12+ tokens)."""
    reply = msg.reply or ""
    tokens = reply.split(".")
    if len(tokens) == 9 and tokens[0] == "$JS":
        return int(tokens[5])
    if len(tokens) >= 12 and tokens[0] == "$JS":
        return int(tokens[7])
    return msg.metadata.sequence.stream


class ConsumerGone(Exception):
    """The consumer a PullReader reads from no longer exists."""


class PullReader:
    """Batches from a pull consumer through one core-NATS subscription, with the next request already out.

    nats-py's ``fetch`` waits for every message with a task of its own (named with a fresh uuid4): reading a backlog
    that way cost three times a plain callback (docs/benchmarks.md, projector). This speaks JetStream's pull protocol
    directly: a request for ``batch`` messages on ``$JS.API.CONSUMER.MSG.NEXT``, the messages to a private inbox in
    stream order, a status message when a request ends early (408 expired, 409, 503 no consumer). When a request is
    filled the next one goes out at once, so a backlog flows while the caller folds; when caught up, one request
    waits at the server, which sends a new message the moment it is stored.
    """

    def __init__(
        self, js: JetStreamContext, stream: str, consumer: str, *, batch: int = 256, wait: float = 1.0
    ) -> None:
        self._nc: NATS = js._nc  # type: ignore[attr-defined]
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._batch = batch
        self._wait = wait
        self._ready: deque[Msg] = deque()
        self._arrived = asyncio.Event()
        self._owed = 0  # messages asked for and not yet received
        self._expires_at = 0.0
        self._sub: Any = None
        self._inbox = ""
        self._gone = False
        self._closed = False

    async def start(self) -> "PullReader":
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_message)
        return self

    async def _on_message(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            self._ready.append(msg)
            self._owed -= 1
            if self._owed <= 0 and len(self._ready) < 2 * self._batch:
                await self._ask()  # filled: keep the flow going while the caller works on what it has
        elif status == "100":
            return  # heartbeat or flow control
        else:
            self._owed = 0  # the request ended: 404/408 nothing more for now, 409 (e.g. consumer deleted), 503
            description = (msg.headers or {}).get("Description", "")
            if status == "503" or "Consumer Deleted" in description:
                self._gone = True
        self._arrived.set()

    async def _ask(self) -> None:
        if self._closed:
            return
        self._owed = self._batch
        self._expires_at = time.monotonic() + self._wait
        request = {"batch": self._batch, "expires": int(self._wait * 1e9)}
        await self._nc.publish(self._subject, json.dumps(request).encode(), reply=self._inbox)

    async def next(self, wait: float | None = None) -> list[Msg]:
        """Up to ``batch`` messages in stream order; waits up to ``wait`` seconds (default: the reader's) when none
        are there, and returns [] then."""
        if not self._ready:
            if self._owed <= 0 or time.monotonic() >= self._expires_at:
                # Nothing asked for, or the request outlived its expiry unanswered (e.g. lost in a reconnect).
                await self._ask()
            self._arrived.clear()
            timeout = self._wait if wait is None else wait
            if timeout > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), timeout)
        if self._gone:
            raise ConsumerGone(self._subject)
        batch = [self._ready.popleft() for _ in range(min(self._batch, len(self._ready)))]
        if self._owed <= 0 and len(self._ready) < self._batch:
            await self._ask()
        return batch

    async def stop(self) -> None:
        self._closed = True
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None


async def iter_events(
    js: JetStreamContext,
    filter_subject: str,
    *,
    after: int = 0,
    until: int | None = None,
    limit: int | None = None,
    batch: int = 512,
) -> AsyncIterator[StoredEvent]:
    """Stored events on a subject filter, in stream order, through a short-lived ephemeral consumer. Stops at the
    end of the stream as it was when the read began."""
    config = api.ConsumerConfig(
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=after + 1,
        ack_policy=api.AckPolicy.NONE,
        max_deliver=1,
        inactive_threshold=10.0,
        mem_storage=True,
        filter_subject=filter_subject,
    )
    info = await js.add_consumer(STREAM, config)
    pending = info.num_pending
    if limit is not None:
        pending = min(pending, limit)
    reader = await PullReader(js, STREAM, info.name, batch=max(1, min(batch, pending)), wait=5.0).start()
    count = 0
    try:
        while count < pending:
            msgs = await reader.next()
            if not msgs:
                break
            for msg in msgs:
                seq = stream_seq(msg)
                if until is not None and seq > until:
                    return
                count += 1
                yield decode(seq, msg.subject, msg.data)
                if count >= pending:
                    return
    finally:
        await reader.stop()
        with contextlib.suppress(Exception):  # the consumer also expires by itself after inactive_threshold
            await js.delete_consumer(STREAM, info.name)


async def read_events(js: JetStreamContext, filter_subject: str, **kwargs: Any) -> list[StoredEvent]:
    return [event async for event in iter_events(js, filter_subject, **kwargs)]


async def read_job_events(js: JetStreamContext, job_id: str, **kwargs: Any) -> list[StoredEvent]:
    return await read_events(js, job_filter(job_id), **kwargs)


# --- the projector's in-order reader -----------------------------------------------------------------------------

# Events per batch of an in-order reader.
BATCH = 256
# A replica's consumer that has not pulled for this long (its replica is gone) is deleted by the server.
REPLICA_INACTIVE = 24 * 3600.0


def in_order_consumer(durable: str, start: int = 1) -> api.ConsumerConfig:
    return api.ConsumerConfig(
        durable_name=durable,
        inactive_threshold=REPLICA_INACTIVE,
        filter_subject=ALL_EVENTS,
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=max(1, start),
        # One ack settles a whole batch: batches are folded in order and written before the ack.
        ack_policy=api.AckPolicy.ALL,
        ack_wait=30.0,
        # Unacked events are never waited for: the reader rewinds to them (see InOrderReader), so redelivery by the
        # server is only a backstop.
        max_deliver=-1,
        max_ack_pending=4 * BATCH,
    )


class InOrderReader:
    """Batches of the whole stream, in order, through one durable consumer (each projector replica has its own).

    The fold skips an event whose sequence is not newer than its view's, so events must be folded in stream order:
    a later event folded first would hide an earlier one for good. JetStream redelivers unacked messages only after
    ``ack_wait``, and in the meantime hands out newer ones, so after a crash or a failed batch the reader does not
    wait for redelivery: it recreates its consumer at the first unacked sequence ("rewinds"). Folding a batch again
    is harmless. The PullReader keeps the next request out, so a backlog is fetched while a batch is folded.
    """

    def __init__(self, js: JetStreamContext, durable: str) -> None:
        self._js = js
        self._durable = durable
        self._reader: PullReader | None = None

    async def open(self, start: int | None = None) -> None:
        """Read from ``start``, or from the consumer's first unacked event (the stream's start if it is new)."""
        await self.close()
        if start is None:
            try:
                info = await self._js.consumer_info(STREAM, self._durable)
                start = info.ack_floor.stream_seq + 1 if info.ack_floor else 1
            except NotFoundError:
                start = 1
        with contextlib.suppress(NotFoundError):
            await self._js.delete_consumer(STREAM, self._durable)
        await self._js.add_consumer(STREAM, in_order_consumer(self._durable, start))
        self._reader = await PullReader(self._js, STREAM, self._durable, batch=BATCH, wait=1.0).start()

    async def next(self, wait: float | None = None) -> list[Msg]:
        """The next batch in stream order; empty after ``wait`` seconds (default: a second) with nothing new."""
        if self._reader is None:
            await self.open()
        assert self._reader is not None
        try:
            return await self._reader.next(wait)
        except ConsumerGone:
            # Deleted by hand or expired: make it again where its acks left off (the stream's start if unknown).
            log.warning("consumer %s vanished; recreating it", self._durable)
            await self.open()
            return []

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None
