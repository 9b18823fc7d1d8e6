"""What tubeflow needs on a NATS server: the event stream, the dead-letter stream, the KV buckets and the durable
work consumers. Declared idempotently (at start, or once by `tubeflow setup`), or waited for."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Iterable

from nats.js import JetStreamContext, api
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.errors import Error as JetStreamError

from contracts.events import ALL_EVENTS, subject_filter
from contracts.presets import ALL_PRESETS
from contracts.subscriptions import ALL_SUBSCRIPTIONS
from contracts.system import ALL_SYSTEM

log = logging.getLogger("tubeflow.topology")

STREAM = "TUBEFLOW_EVENTS"
DLQ_STREAM = "TUBEFLOW_DLQ"
PRESETS_STREAM = "TUBEFLOW_PRESETS"
SUBSCRIPTIONS_STREAM = "TUBEFLOW_SUBSCRIPTIONS"
# Facts about the installation rather than a job: sites cooling down (contracts/system.py).
SYSTEM_STREAM = "TUBEFLOW_SYSTEM"
DLQ_PREFIX = "tubeflow.dlq"
JOBS_BUCKET = "tubeflow_jobs"
IDEMPOTENCY_BUCKET = "tubeflow_idempotency"
MEDIA_BUCKET = "tubeflow_media"
CLAIMS_BUCKET = "tubeflow_claims"
# The download queue: tickets per priority (a work queue: a ticket is gone once a worker settled it).
WORK_STREAM = "TUBEFLOW_WORK"
WORK_PREFIX = "tubeflow.work"
# Queue controls (`paused`), and what each downloader process runs (expiring when the process is gone).
QUEUE_BUCKET = "tubeflow_queue"
PAUSED_KEY = "paused"
# The download queue's durable consumers, one per priority (the downloader takes from them, the API counts them).
TICKET_DURABLES = {priority: f"downloader-work-{priority}-v1" for priority in ("high", "normal", "low")}
WORKERS_BUCKET = "tubeflow_workers"
# Per-site leases (TUBEFLOW_SITE_CONCURRENCY) and request counts (TUBEFLOW_SITE_RATE), shared by all downloaders.
SITES_BUCKET = "tubeflow_sites"
# When each paced site may next start a download (TUBEFLOW_SITE_PACING): kept without a TTL, as gaps may be long.
PACING_BUCKET = "tubeflow_pacing"
# Personal API tokens (issue 28): id -> owner, name, scope, expiry and the SHA-256 of the secret (never the secret).
TOKENS_BUCKET = "tubeflow_tokens"
# Signed-in sessions (TUBEFLOW_AUTH=oidc) and sign-ins under way: a digest of the cookie or the state -> who, until.
SESSIONS_BUCKET = "tubeflow_sessions"
SESSIONS_TTL = 12 * 3600.0 + 300.0
# Webhooks (id -> target, events, secret) and their deliveries (webhook.delivery -> record, kept a week).
WEBHOOKS_BUCKET = "tubeflow_webhooks"
DELIVERIES_BUCKET = "tubeflow_deliveries"
DELIVERY_TTL = 7 * 24 * 3600.0
# The scheduler's lease (key `leader`): which scheduler process checks subscriptions now.
SCHEDULER_BUCKET = "tubeflow_scheduler"
# What each downloader's engine can do on real sites (contracts.engine.EngineFacts), refreshed every minute.
ENGINE_BUCKET = "tubeflow_engine"
ENGINE_TTL = 300.0
# What a resolve found for a single video (compressed JSON), for the downloader that takes the item's ticket when it
# is not the one that resolved it: the item is not extracted again (services/downloader/probes.py).
PROBES_BUCKET = "tubeflow_probes"
# Podcast feeds of a folder or a preset (issue 30): who made each, whose jobs it lists, its key (a subscription's feed
# is kept with the subscription).
FEEDS_BUCKET = "tubeflow_feeds"
# As services.engine.media's PROBE_TTL and MAX_CARRIED_PROBE (a unit test keeps them equal).
PROBES_TTL = 60.0
MAX_PROBE_BYTES = 1024 * 1024
BUCKETS = (
    JOBS_BUCKET,
    IDEMPOTENCY_BUCKET,
    MEDIA_BUCKET,
    CLAIMS_BUCKET,
    QUEUE_BUCKET,
    WORKERS_BUCKET,
    SITES_BUCKET,
    PACING_BUCKET,
    TOKENS_BUCKET,
    SESSIONS_BUCKET,
    WEBHOOKS_BUCKET,
    DELIVERIES_BUCKET,
    SCHEDULER_BUCKET,
    ENGINE_BUCKET,
    PROBES_BUCKET,
    FEEDS_BUCKET,
)
# A worker's entry in WORKERS_BUCKET is refreshed this often and outlives its process by at most WORKER_TTL.
WORKER_TTL = 30.0
# A site lease of a dead worker frees itself after this long (a live one is refreshed well before); longer than a
# minute, so that a site's count of downloads started this minute lives as long as the minute.
SITE_LEASE_TTL = 65.0
# A download holds its claim at most this long; a dead holder's claim frees itself.
CLAIM_TTL = 300.0
# How long an Idempotency-Key keeps answering with the same job.
IDEMPOTENCY_TTL = 24 * 3600.0
# Window in which JetStream drops a second publish with the same Nats-Msg-Id.
DUPLICATE_WINDOW = 120.0
MAX_EVENT_BYTES = 1024 * 1024

# --- streams and buckets ----------------------------------------------------------------------------------------


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


def work_stream_config(replicas: int = 1) -> api.StreamConfig:
    return api.StreamConfig(
        num_replicas=replicas,
        name=WORK_STREAM,
        description="tubeflow download queue: one ticket per item to download, on tubeflow.work.<priority>.<job>",
        subjects=[f"{WORK_PREFIX}.>"],
        retention=api.RetentionPolicy.WORK_QUEUE,
        storage=api.StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW,
        max_msg_size=MAX_EVENT_BYTES,
        allow_direct=True,
    )


def presets_stream_config(replicas: int = 1) -> api.StreamConfig:
    return api.StreamConfig(
        num_replicas=replicas,
        name=PRESETS_STREAM,
        description="tubeflow presets: saved and deleted, per name (contracts/presets.py)",
        subjects=[ALL_PRESETS],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW,
        # Each preset keeps its last changes: enough to see what it was, bounded however often it changes.
        max_msgs_per_subject=20,
        max_msg_size=64 * 1024,
    )


def subscriptions_stream_config(replicas: int = 1) -> api.StreamConfig:
    return api.StreamConfig(
        num_replicas=replicas,
        name=SUBSCRIPTIONS_STREAM,
        description="tubeflow subscriptions: created, changed, checked (contracts/subscriptions.py)",
        subjects=[ALL_SUBSCRIPTIONS],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW,
        max_msg_size=MAX_EVENT_BYTES,
    )


def system_stream_config(replicas: int = 1) -> api.StreamConfig:
    return api.StreamConfig(
        num_replicas=replicas,
        name=SYSTEM_STREAM,
        description="tubeflow installation facts: sites cooling down and resumed (contracts/system.py)",
        subjects=[ALL_SYSTEM],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW,
        # A year of them, bounded however often sites push back.
        max_age=365 * 86_400.0,
        max_msgs=100_000,
        max_msg_size=64 * 1024,
    )


def stream_configs(replicas: int = 1) -> list[api.StreamConfig]:
    return [
        stream_config(replicas),
        dlq_stream_config(replicas),
        presets_stream_config(replicas),
        work_stream_config(replicas),
        subscriptions_stream_config(replicas),
        system_stream_config(replicas),
    ]


def bucket_configs(replicas: int = 1) -> list[api.KeyValueConfig]:
    def bucket(name: str, description: str, **extra: Any) -> api.KeyValueConfig:
        return api.KeyValueConfig(
            bucket=name, description=description, history=1, storage=api.StorageType.FILE, replicas=replicas, **extra
        )

    return [
        bucket(
            JOBS_BUCKET,
            "tubeflow job views, folded from TUBEFLOW_EVENTS (disposable)",
            max_value_size=MAX_EVENT_BYTES * 8,
        ),
        bucket(IDEMPOTENCY_BUCKET, "Idempotency-Key -> job id", ttl=IDEMPOTENCY_TTL),
        bucket(MEDIA_BUCKET, "media key -> file already downloaded (reused instead of downloading again)"),
        bucket(CLAIMS_BUCKET, "media key -> worker downloading it right now", ttl=CLAIM_TTL),
        bucket(QUEUE_BUCKET, "queue controls: paused or not"),
        bucket(WORKERS_BUCKET, "downloader process -> what it runs now", ttl=WORKER_TTL),
        bucket(SITES_BUCKET, "site leases and request counts shared by all downloaders", ttl=SITE_LEASE_TTL),
        bucket(PACING_BUCKET, "when each paced site may next start a download (TUBEFLOW_SITE_PACING)"),
        bucket(TOKENS_BUCKET, "personal API tokens: owner, scope, expiry, the secret's SHA-256"),
        bucket(SESSIONS_BUCKET, "signed-in sessions and sign-ins under way (oidc)", ttl=SESSIONS_TTL),
        bucket(WEBHOOKS_BUCKET, "webhooks: where finished jobs are announced"),
        bucket(DELIVERIES_BUCKET, "webhook deliveries and their attempts", ttl=DELIVERY_TTL),
        bucket(SCHEDULER_BUCKET, "the scheduler lease: which process checks subscriptions now"),
        bucket(ENGINE_BUCKET, "downloader process -> what its engine can do on real sites", ttl=ENGINE_TTL),
        bucket(FEEDS_BUCKET, "podcast feeds of folders and presets: kind, name, maker, key"),
        bucket(
            PROBES_BUCKET,
            "job.item -> what its resolve found, for the downloader that takes it",
            ttl=PROBES_TTL,
            max_value_size=MAX_PROBE_BYTES,
        ),
    ]


async def ensure_topology(js: JetStreamContext, replicas: int = 1) -> list[str]:
    """Create the streams and buckets that are missing. Idempotent; returns what it created."""
    created = []
    for config in stream_configs(replicas):
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)
            created.append(f"stream {config.name}")
    for bucket in bucket_configs(replicas):
        try:
            await js.key_value(bucket.bucket)
        except BucketNotFoundError:
            await js.create_key_value(bucket)
            created.append(f"bucket {bucket.bucket}")
    return created


async def missing_topology(js: JetStreamContext) -> list[str]:
    missing = []
    for name in (config.name for config in stream_configs()):
        try:
            await js.stream_info(name)
        except NotFoundError:
            missing.append(f"stream {name}")
    for bucket in BUCKETS:
        try:
            await js.key_value(bucket)
        except BucketNotFoundError:
            missing.append(f"bucket {bucket}")
    return missing


async def prepare(js: JetStreamContext, settings: Any) -> list[str]:
    """What a service does at start: declare what is missing, or (TUBEFLOW_DECLARE=false, after `tubeflow setup`
    or when `tubeflow up` declared it already) wait until it exists."""
    if settings.declare:
        return await ensure_topology(js, replicas=settings.stream_replicas)
    waited = 0.0
    while missing := await missing_topology(js):
        if waited % 10 == 0:
            log.warning("waiting for `tubeflow setup`: missing %s", ", ".join(missing))
        await asyncio.sleep(1.0)
        waited += 1.0
    return []


# --- work consumers ---------------------------------------------------------------------------------------------

ACK_WAIT = 30.0
MAX_DELIVER = 10
# No server-side backoff, on purpose: with `backoff` set, nats-server 2.15 ignores the delay of a NAK from the
# second redelivery on and waits backoff[n] instead (measured: 0.2 s asked, 30 s waited). Retry delays are the
# handlers' choice (RetryLater, growing per attempt); a crashed worker's message comes back after ack_wait, which
# in-progress acks keep short even for long downloads.
BACKOFF: list[float] = []


@dataclass(frozen=True)
class ConsumerSpec:
    """One durable work consumer of one event type, as a service declares it. The service's broker subscribes with
    ``config()`` and `tubeflow setup` declares the same ``config()``, so the two can't drift apart.

    Durable consumer settings don't all change in place on the server: change one by releasing a new ``durable``
    name (…-v2), not by editing the old one.
    """

    event_type: str
    durable: str
    max_ack_pending: int
    # Another stream than the event stream (the download queue), and its subject filter there.
    stream: str = STREAM
    subject: str = ""

    @property
    def filter_subject(self) -> str:
        return self.subject or subject_filter(self.event_type)

    def config(self, ack_wait: float = ACK_WAIT) -> api.ConsumerConfig:
        return api.ConsumerConfig(
            durable_name=self.durable,
            filter_subject=self.filter_subject,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_deliver=MAX_DELIVER,
            backoff=BACKOFF or None,
            max_ack_pending=self.max_ack_pending,
        )


_COMPARED = ("filter_subject", "ack_policy", "ack_wait", "max_deliver", "max_ack_pending", "deliver_policy")


def _differences(current: api.ConsumerConfig, wanted: api.ConsumerConfig) -> list[str]:
    out = []
    for field in _COMPARED:
        have, want = getattr(current, field), getattr(wanted, field)
        if want is not None and have != want:
            out.append(f"{field} {have} -> {want}")
    return out


async def declare_consumers(
    js: JetStreamContext, specs: Iterable[ConsumerSpec], ack_wait: float
) -> tuple[list[str], list[str]]:
    """Create the work consumers that are missing and update those that differ where JetStream allows it.
    Returns (what changed, problems); a consumer that can't change in place is reported, never deleted."""
    changes: list[str] = []
    problems: list[str] = []
    for spec in specs:
        name, wanted = spec.durable, spec.config(ack_wait)
        try:
            info = await js.consumer_info(spec.stream, name)
        except NotFoundError:
            await js.add_consumer(spec.stream, wanted)
            changes.append(f"created consumer {name}")
            continue
        differences = _differences(info.config, wanted)
        if not differences:
            changes.append(f"unchanged consumer {name}")
            continue
        try:
            await js.add_consumer(spec.stream, wanted)
            changes.append(f"updated consumer {name}: {', '.join(differences)}")
        except JetStreamError as exc:
            problems.append(
                f"consumer {name} differs ({', '.join(differences)}) and can't be changed in place: {exc}. "
                "Release it under a new durable name (e.g. -v2)."
            )
    return changes, problems
