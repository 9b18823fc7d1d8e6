"""`tubeflow setup`: declare everything tubeflow needs on a NATS server, idempotently, and say what changed.

Streams and KV buckets are created when missing (and their replica count raised when asked); the work consumers
every service declares (its ``CONSUMERS``) are created, or updated in place where JetStream allows it. A consumer
whose settings can't change in place is reported, never deleted: bump its durable name (…-v2) in a release instead
(docs/deploy.md).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from services.runtime.nats import ConsumerSpec, connect, declare_consumers, ensure_topology
from services.runtime.settings import Settings
from services.runtime.tasks import run_briefly

# Every service's composition root; each names the work consumers it subscribes with (``CONSUMERS``).
SERVICE_MODULES = {
    "api": "services.api.main",
    "downloader": "services.downloader.main",
    "extractor": "services.extractor.main",
    "progress": "services.progress.main",
    "notifier": "services.notifier.main",
    "scheduler": "services.scheduler.main",
}


def work_consumers() -> list[ConsumerSpec]:
    """The durable work consumers exactly as the services subscribe with them."""
    return [spec for module in SERVICE_MODULES.values() for spec in importlib.import_module(module).CONSUMERS]


async def setup(settings: Settings) -> tuple[list[str], list[str]]:
    nc = await connect(
        settings.nats_url,  # type: ignore[arg-type]
        "tubeflow-setup",
        auth=settings.nats_auth(),
        timeout=settings.nats_connect_timeout,
    )
    try:
        js = nc.jetstream()
        changes = [f"created {created}" for created in await ensure_topology(js, replicas=settings.stream_replicas)]
        consumers, problems = await declare_consumers(js, work_consumers(), settings.ack_wait)
        return changes + consumers, problems
    finally:
        await nc.close()


def cmd_setup(args: argparse.Namespace) -> int:
    settings = Settings()
    if not settings.nats_url:
        print("TUBEFLOW_NATS_URL is not set", file=sys.stderr)
        return 2
    changes, problems = run_briefly(setup(settings))
    for line in changes:
        print(line)
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0
