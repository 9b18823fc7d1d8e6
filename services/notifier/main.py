"""The notifier's composition root (issue 16, work in progress): finished jobs announced to webhooks.

It listens to the read-model bucket (one core subscription, like the API's hub): a job summary that is finished
(completed, partial, failed, cancelled) after a webhook was made, for an event the webhook asked for, becomes one
delivery record, created with `create` so that one replica of many sends it and a restart does not send it again.
Due deliveries are attempted by whichever replica takes them first (compare-and-set on the record)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

import httpx
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from contracts.views import TERMINAL_STATUSES, JobSummary
from services.notifier.deliveries import Delivery, delivery_id
from services.notifier.signing import headers
from services.notifier.webhooks import Webhook, WebhookStore
from services.runtime.addresses import AddressPolicy, ForbiddenAddress, check_results
from services.runtime.infrastructure import open_infrastructure
from services.runtime.nats import JOBS_BUCKET, jobs_bucket, read_bucket, watch_bucket
from services.runtime.nats.topology import DELIVERIES_BUCKET, WEBHOOKS_BUCKET
from services.runtime.nats.views import SUMMARY_KEYS, parse_key
from services.runtime.settings import Settings

log = logging.getLogger("tubeflow.notifier")

CONSUMERS = ()
TICK = 1.0
# An attempt holds its record this long; a replica that died mid-attempt leaves it to another after that.
ATTEMPT_LEASE = 30.0
TIMEOUT = 10.0


class Notifier:
    def __init__(
        self, webhooks: WebhookStore, deliveries: KeyValue, policy: AddressPolicy, first_retry: float = 5.0
    ) -> None:
        self._first_retry = first_retry
        self._webhooks = webhooks
        self._deliveries = deliveries
        self._policy = policy
        self._seen: set[tuple[str, int, str]] = set()
        self._wake = asyncio.Event()

    def on_summary(self, key: str, data: bytes) -> None:
        if parse_key(key)[1] is not None:
            return  # a page of items
        try:
            summary = JobSummary.model_validate_json(data)
        except ValidationError:
            return  # a page of items, not a summary
        if summary.status in TERMINAL_STATUSES and summary.deleted_at is None:
            mark = (summary.id, summary.retries, summary.status)
            if mark not in self._seen:
                self._seen.add(mark)
                asyncio.ensure_future(self._announce(summary))

    async def _announce(self, summary: JobSummary) -> None:
        event = f"job.{summary.status}"
        for webhook in await self._webhooks.all():
            if event not in webhook.events or summary.finished_at is None or summary.finished_at < webhook.created_at:
                continue
            delivery = Delivery(
                id=delivery_id(webhook.id, summary.id, summary.retries, event),
                webhook=webhook.id,
                event=event,
                job_id=summary.id,
                body={"event": event, "job": summary.model_dump(mode="json")},
            )
            delivery.body["delivery"] = delivery.id
            try:
                await self._deliveries.create(f"{webhook.id}.{delivery.id}", delivery.encode())
            except KeyWrongLastSequenceError:
                continue  # another replica (or this one before a restart) has it
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as client:
            while not stop.is_set():
                self._wake.clear()
                try:
                    await self._attempt_due(client)
                except Exception as exc:  # NATS away for a moment: the next tick tries again
                    log.warning("deliveries: %s", exc)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), TICK)

    async def _attempt_due(self, client: httpx.AsyncClient) -> None:
        try:
            keys = await self._deliveries.keys()
        except NoKeysError:
            return
        now = time.time()
        for key in keys:
            try:
                entry = await self._deliveries.get(key)
            except KeyNotFoundError:
                continue
            delivery = Delivery.decode(entry.value or b"{}")
            if delivery.status != "pending" or delivery.next_at > now:
                continue
            delivery.attempts += 1
            delivery.next_at = now + ATTEMPT_LEASE
            try:
                revision = await self._deliveries.update(key, delivery.encode(), last=entry.revision)
            except KeyWrongLastSequenceError:
                continue  # another replica took this attempt
            webhook = await self._webhooks.get(delivery.webhook)
            if webhook is None:
                delivery.status, delivery.last_error = "dead", "the webhook was deleted"
            else:
                await self._send(client, webhook, delivery)
            with contextlib.suppress(KeyWrongLastSequenceError):
                await self._deliveries.update(key, delivery.encode(), last=revision)

    async def _send(self, client: httpx.AsyncClient, webhook: Webhook, delivery: Delivery) -> None:
        body = json.dumps(delivery.body).encode()
        now = time.time()
        try:
            await self._check_address(webhook.url)
            response = await client.post(
                webhook.url, content=body, headers=headers(webhook.secret, int(now), body, delivery.id, delivery.event)
            )
        except (httpx.HTTPError, OSError) as exc:
            delivery.failed(f"{type(exc).__name__}: {exc}", None, now, self._first_retry)
            return
        if 200 <= response.status_code < 300:
            delivery.succeeded(response.status_code, now)
        else:
            delivery.failed(f"HTTP {response.status_code}", response.status_code, now, self._first_retry)

    async def _check_address(self, url: str) -> None:
        """The target passes the address policy, checked on every resolved address (no SSRF through webhooks)."""
        parts = httpx.URL(url)
        reason = self._policy.url_reason(url)
        if reason:
            raise ForbiddenAddress(f"forbidden_address: {reason}")
        results = await asyncio.get_running_loop().getaddrinfo(parts.host, parts.port or 443)
        check_results(self._policy, parts.host, results)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    async with open_infrastructure(settings, "notifier", stop=stop) as infra:
        notifier = Notifier(
            WebhookStore(await infra.js.key_value(WEBHOOKS_BUCKET)),
            await infra.js.key_value(DELIVERIES_BUCKET),
            settings.address_policy(),
            first_retry=settings.webhook_retry_delay,
        )
        sub = await watch_bucket(infra.nc, JOBS_BUCKET, on_put=notifier.on_summary, on_delete=lambda key: None)
        try:
            kv = await jobs_bucket(infra.js)
            for key, value in (await read_bucket(kv, keys=SUMMARY_KEYS)).items():
                notifier.on_summary(key, value)
            await notifier.run(stop)
        finally:
            await sub.unsubscribe()
