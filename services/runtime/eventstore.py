"""The NATS adapter every service shares: connection, stream and bucket topology, publishing, reading back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from contracts.events import ALL_EVENTS, Envelope, InvalidEvent, encode_event, job_filter, parse_event, subject
from services.runtime.tracing import inject

log = logging.getLogger("tubeflow.eventstore")

STREAM = "TUBEFLOW_EVENTS"
DLQ_STREAM = "TUBEFLOW_DLQ"
DLQ_PREFIX = "tubeflow.dlq"
JOBS_BUCKET = "tubeflow_jobs"
IDEMPOTENCY_BUCKET = "tubeflow_idempotency"
MEDIA_BUCKET = "tubeflow_media"
CLAIMS_BUCKET = "tubeflow_claims"
# A download holds its claim at most this long; a dead holder's claim frees itself.
CLAIM_TTL = 300.0
# How long an Idempotency-Key keeps answering with the same job.
IDEMPOTENCY_TTL = 24 * 3600.0
# Window in which JetStream drops a second publish with the same Nats-Msg-Id.
DUPLICATE_WINDOW = 120.0
MAX_EVENT_BYTES = 1024 * 1024


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


def stream_config(replicas: int = 1) -> api.StreamConfig:
    return api.StreamConfig(
        num_replicas=replicas,
        name=STREAM,
        description="tubeflow job events: the source of truth",
        subjects=[ALL_EVENTS],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        discard=api.DiscardPolicy.OLD,
        duplicate_window=DUPLICATE_WINDOW,
        max_msg_size=MAX_EVENT_BYTES,
        allow_direct=True,
    )


async def ensure_topology(js: JetStreamContext, replicas: int = 1) -> list[str]:
    """Create the streams and buckets that are missing. Idempotent; returns what it created."""
    created = []
    for config in (stream_config(replicas), dlq_stream_config(replicas)):
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)
            created.append(f"stream {config.name}")
    buckets = [
        api.KeyValueConfig(
            bucket=JOBS_BUCKET,
            description="tubeflow job views, folded from TUBEFLOW_EVENTS (disposable)",
            history=1,
            storage=api.StorageType.FILE,
            max_value_size=MAX_EVENT_BYTES * 8,
            replicas=replicas,
        ),
        api.KeyValueConfig(
            bucket=IDEMPOTENCY_BUCKET,
            description="Idempotency-Key -> job id",
            history=1,
            storage=api.StorageType.FILE,
            ttl=IDEMPOTENCY_TTL,
            replicas=replicas,
        ),
        api.KeyValueConfig(
            bucket=MEDIA_BUCKET,
            description="media key -> file already downloaded (reused instead of downloading again)",
            history=1,
            storage=api.StorageType.FILE,
            replicas=replicas,
        ),
        api.KeyValueConfig(
            bucket=CLAIMS_BUCKET,
            description="media key -> worker downloading it right now",
            history=1,
            storage=api.StorageType.FILE,
            ttl=CLAIM_TTL,
            replicas=replicas,
        ),
    ]
    for bucket in buckets:
        try:
            await js.key_value(bucket.bucket)
        except BucketNotFoundError:
            await js.create_key_value(bucket)
            created.append(f"bucket {bucket.bucket}")
    return created


BUCKETS = (JOBS_BUCKET, IDEMPOTENCY_BUCKET, MEDIA_BUCKET, CLAIMS_BUCKET)


async def prepare(js: JetStreamContext, settings: Any) -> list[str]:
    """What a service does at start: declare what is missing, or (TUBEFLOW_DECLARE=false, after `tubeflow setup`)
    wait until it exists."""
    if settings.declare:
        return await ensure_topology(js, replicas=settings.stream_replicas)
    waited = 0.0
    while True:
        missing = []
        for name in (STREAM, DLQ_STREAM):
            try:
                await js.stream_info(name)
            except NotFoundError:
                missing.append(f"stream {name}")
        for bucket in BUCKETS:
            try:
                await js.key_value(bucket)
            except BucketNotFoundError:
                missing.append(f"bucket {bucket}")
        if not missing:
            return []
        if waited % 10 == 0:
            log.warning("waiting for `tubeflow setup`: missing %s", ", ".join(missing))
        await asyncio.sleep(1.0)
        waited += 1.0


def dlq_stream_config(replicas: int = 1) -> api.StreamConfig:
    return api.StreamConfig(
        num_replicas=replicas,
        name=DLQ_STREAM,
        description="tubeflow dead letters: events a consumer could not read or process, with the reason",
        subjects=[f"{DLQ_PREFIX}.>"],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW,
        max_age=30 * 24 * 3600.0,
    )


class DeadLetters:
    """Sends a message a consumer gives up on to `tubeflow.dlq.<consumer>`, keeping its headers and saying why."""

    def __init__(self, js: JetStreamContext, consumer: str) -> None:
        self._js = js
        self._consumer = consumer

    async def send(
        self, subject_: str, data: bytes, headers: dict[str, str] | None, stream_seq: int, deliveries: int, reason: str
    ) -> None:
        out = dict(headers or {})
        if "Nats-Msg-Id" in out:
            out["Tubeflow-Dlq-Original-Msg-Id"] = out["Nats-Msg-Id"]
        out.update(
            {
                "Nats-Msg-Id": f"dlq:{self._consumer}:{stream_seq}",
                "Tubeflow-Dlq-Consumer": self._consumer,
                "Tubeflow-Dlq-Subject": subject_,
                "Tubeflow-Dlq-Stream-Seq": str(stream_seq),
                "Tubeflow-Dlq-Deliveries": str(deliveries),
                "Tubeflow-Dlq-Reason": reason.replace("\r", " ").replace("\n", " ")[:2000],
            }
        )
        await self._js.publish(f"{DLQ_PREFIX}.{self._consumer}", data, stream=DLQ_STREAM, headers=out, timeout=5.0)
        from services.runtime.metrics import DEAD_LETTERS

        DEAD_LETTERS.labels(self._consumer).inc()


async def jobs_bucket(js: JetStreamContext) -> KeyValue:
    return await js.key_value(JOBS_BUCKET)


async def read_bucket(kv: KeyValue) -> dict[str, bytes]:
    """Every current key and value of a bucket, read once through a short-lived watcher."""
    out: dict[str, bytes] = {}
    watcher = await kv.watchall(ignore_deletes=True)
    try:
        async for entry in watcher:
            if entry is None:
                break
            if entry.value:
                out[entry.key] = entry.value
    finally:
        await watcher.stop()
    return out


class Publisher(Protocol):
    async def publish(self, event: Envelope) -> Any: ...


class EventPublisher:
    """Publishes events with Nats-Msg-Id = event id and checks the JetStream acknowledgement."""

    def __init__(self, js: JetStreamContext, *, timeout: float = 5.0) -> None:
        self._js = js
        self._timeout = timeout

    async def publish(self, event: Envelope) -> api.PubAck:
        headers = {"Nats-Msg-Id": event.event_id}
        inject(headers)
        return await self._js.publish(
            subject(event.job_id, event.type),
            encode_event(event),
            timeout=self._timeout,
            stream=STREAM,
            headers=headers,
        )


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
