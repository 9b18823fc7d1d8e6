"""Apprise (TUBEFLOW_APPRISE_URLS: ntfy, Telegram, Discord, email, json://, …): a short message per finished job or
subscription batch, sent once across notifier replicas (the first to create its record in the deliveries bucket sends
it). A failure is logged and counted (tubeflow_notifications_total{outcome="failed"}), never retried, never blocks.
Apprise fetches by itself (through `requests`): it runs on threads of its own, held to the address policy on every
hop and to a bound on what it reads (``runtime.outbound``)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.runtime.addresses import AddressPolicy
from services.runtime.metrics import NOTIFICATIONS
from services.runtime.outbound import held_to

log = logging.getLogger("tubeflow.notifier.apprise")

TIMEOUT = 30.0
# Key prefix of the sent-once marks in the deliveries bucket.
APPRISE_RECORD = "apprise."
SINCE_KEY = "apprise"


def parse_urls(text: str | None) -> list[str]:
    return [u for u in re.split(r"[\s,]+", text or "") if u]


async def configured_since(kv: KeyValue, now: float) -> float:
    """When Apprise was first set up here: kept (once, by the first notifier) in the webhooks bucket, key `apprise`."""
    try:
        await kv.create(SINCE_KEY, json.dumps({"since": now}).encode())
        return now
    except KeyWrongLastSequenceError:
        entry = await kv.get(SINCE_KEY)
        return float(json.loads(entry.value or b"{}").get("since", now))


class AppriseSender:
    def __init__(
        self, urls: list[str], records: KeyValue, since: float = 0.0, policy: AddressPolicy | None = None
    ) -> None:
        import apprise

        self._policy = policy or AddressPolicy()
        # Threads of its own: a notification service that never answers holds one of these, never the loop's
        # default executor (name resolution of every other part of the process runs there).
        self._threads = ThreadPoolExecutor(2, thread_name_prefix="apprise")

        # What finished before Apprise was first set up is not announced (a first start would repeat a week).
        self.since = since
        self._apprise = apprise.Apprise()
        for url in urls:
            if not self._apprise.add(url):
                # Said at start, once: a typo in one URL must not hide behind "failed" counts later.
                log.error("TUBEFLOW_APPRISE_URLS: apprise does not understand %s", url.split("://", 1)[0] + "://…")
        self._records = records

    async def send_once(self, key: str, title: str, body: str) -> bool | None:
        """Send unless another replica (or this one before a restart) has; None when it was not ours to send."""
        record = APPRISE_RECORD + hashlib.sha256(key.encode()).hexdigest()[:32]
        try:
            await self._records.create(record, key.encode())
        except KeyWrongLastSequenceError:
            return None
        try:
            loop = asyncio.get_running_loop()
            sent = await asyncio.wait_for(loop.run_in_executor(self._threads, self._notify, title, body), TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - a notification service's trouble is never ours
            log.warning("apprise: %s: %s", key, exc)
            sent = False
        NOTIFICATIONS.labels("sent" if sent else "failed").inc()
        if not sent:
            log.warning("apprise: %s was not delivered to every URL", key)
        return bool(sent)

    def _notify(self, title: str, body: str) -> bool:
        with held_to(self._policy):
            return self._apprise.notify(title=title[:250], body=body[:4000])
