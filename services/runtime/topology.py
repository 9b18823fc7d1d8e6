"""`tubeflow setup`: declare everything tubeflow needs on a NATS server, idempotently, and say what changed.

Streams and KV buckets are created when missing (and their replica count raised when asked); the work consumers are
created, or updated in place where JetStream allows it. A consumer whose settings can't change in place is reported,
never deleted: bump its durable name (…-v2) in a release instead (docs/deploy.md).
"""

from __future__ import annotations

from nats.js import api
from nats.js.errors import Error as JetStreamError
from nats.js.errors import NotFoundError

from contracts.events import subject_filter
from services.downloader.app import ITEMS_DURABLE, RESOLVE_DURABLE
from services.extractor.app import DURABLE as EXTRACTOR_DURABLE
from services.runtime.consumers import work_consumer
from services.runtime.eventstore import STREAM, connect, ensure_topology
from services.runtime.settings import Settings

_COMPARED = ("filter_subject", "ack_policy", "ack_wait", "max_deliver", "max_ack_pending", "deliver_policy")


def work_consumers(settings: Settings) -> dict[str, api.ConsumerConfig]:
    """The durable work consumers exactly as the services subscribe with them."""
    consumers = {
        RESOLVE_DURABLE: work_consumer(subject_filter("requested"), max_ack_pending=64, ack_wait=settings.ack_wait),
        ITEMS_DURABLE: work_consumer(subject_filter("item.queued"), max_ack_pending=1024, ack_wait=settings.ack_wait),
        EXTRACTOR_DURABLE: work_consumer(
            subject_filter("download.completed"), max_ack_pending=1024, ack_wait=settings.ack_wait
        ),
    }
    for name, config in consumers.items():
        config.durable_name = name
    return consumers


def _differences(current: api.ConsumerConfig, wanted: api.ConsumerConfig) -> list[str]:
    out = []
    for field in _COMPARED:
        have, want = getattr(current, field), getattr(wanted, field)
        if want is not None and have != want:
            out.append(f"{field} {have} -> {want}")
    return out


async def setup(settings: Settings) -> tuple[list[str], list[str]]:
    nc = await connect(settings.nats_url, "tubeflow-setup")  # type: ignore[arg-type]
    changes: list[str] = []
    problems: list[str] = []
    try:
        js = nc.jetstream()
        for created in await ensure_topology(js, replicas=settings.stream_replicas):
            changes.append(f"created {created}")
        for name, wanted in work_consumers(settings).items():
            try:
                info = await js.consumer_info(STREAM, name)
            except NotFoundError:
                await js.add_consumer(STREAM, wanted)
                changes.append(f"created consumer {name}")
                continue
            differences = _differences(info.config, wanted)
            if not differences:
                changes.append(f"unchanged consumer {name}")
                continue
            try:
                await js.add_consumer(STREAM, wanted)
                changes.append(f"updated consumer {name}: {', '.join(differences)}")
            except JetStreamError as exc:
                problems.append(
                    f"consumer {name} differs ({', '.join(differences)}) and can't be changed in place: {exc}. "
                    "Release it under a new durable name (e.g. -v2)."
                )
    finally:
        await nc.close()
    return changes, problems
