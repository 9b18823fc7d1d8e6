"""The NATS adapter: the only package that knows JetStream's details (connection, topology, consumer settings,
publishing, reading back, KV subjects). Everything else imports the names below."""

from services.runtime.nats.connection import NATS_AWAY, connect
from services.runtime.nats.kv import jobs_bucket, read_bucket, watch_bucket
from services.runtime.nats.publish import DeadLetters, EventPublisher, Publisher
from services.runtime.nats.read import (
    ConsumerGone,
    InOrderReader,
    PullReader,
    StoredEvent,
    decode,
    iter_events,
    read_events,
    read_job_events,
    stream_seq,
)
from services.runtime.nats.topology import (
    BUCKETS,
    CLAIMS_BUCKET,
    DLQ_STREAM,
    IDEMPOTENCY_BUCKET,
    JOBS_BUCKET,
    MEDIA_BUCKET,
    STREAM,
    ConsumerSpec,
    declare_consumers,
    ensure_topology,
    prepare,
)

__all__ = [
    "NATS_AWAY",
    "BUCKETS",
    "CLAIMS_BUCKET",
    "DLQ_STREAM",
    "IDEMPOTENCY_BUCKET",
    "JOBS_BUCKET",
    "MEDIA_BUCKET",
    "STREAM",
    "ConsumerGone",
    "ConsumerSpec",
    "InOrderReader",
    "DeadLetters",
    "EventPublisher",
    "Publisher",
    "PullReader",
    "StoredEvent",
    "connect",
    "declare_consumers",
    "decode",
    "ensure_topology",
    "iter_events",
    "jobs_bucket",
    "prepare",
    "read_bucket",
    "read_events",
    "read_job_events",
    "stream_seq",
    "watch_bucket",
]
