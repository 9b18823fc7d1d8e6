"""The notifier's composition root: finished jobs and new subscription entries announced to webhooks and Apprise.

It listens to the read-model bucket (one core subscription, like the API's hub) and folds the subscriptions (one
ordered consumer): a job summary that is finished (completed, partial, failed, cancelled), or a subscription check
that made jobs (`subscription.new_items`), after a webhook was made, for an event the webhook asked for, becomes one
delivery record, created with `create` so that one replica of many sends it and a restart does not send it again.
Due deliveries are attempted by whichever replica takes them first (compare-and-set on the record). What is older
than the records are kept (a week) is not announced: a notifier started after a long pause does not repeat it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any
from urllib.parse import quote

import httpx
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from contracts.items import view_files
from contracts.subscriptions import SubscriptionView
from contracts.views import TERMINAL_STATUSES, JobSummary, JobView
from services.notifier.apprise_sender import APPRISE_RECORD, AppriseSender, configured_since, parse_urls
from services.notifier.library import (
    LIBRARY_PREFIX,
    MAX_PATHS,
    MediaServer,
    RefreshFailed,
    landed_folders,
    media_servers,
    server_path,
)
from services.notifier.signing import headers
from services.runtime.addresses import AddressPolicy, ForbiddenAddress, check_results
from services.runtime.deliveries import Delivery, delivery_id
from services.runtime.infrastructure import open_infrastructure
from services.runtime.nats import JOBS_BUCKET, jobs_bucket, read_bucket, watch_bucket
from services.runtime.nats.topology import DELIVERIES_BUCKET, DELIVERY_TTL, WEBHOOKS_BUCKET
from services.runtime.nats.views import SUMMARY_KEYS, load, parse_key
from services.runtime.settings import Settings
from services.runtime.subscriptions import SubscriptionBook
from services.runtime.webhooks import Webhook, WebhookStore

log = logging.getLogger("tubeflow.notifier")

CONSUMERS = ()
TICK = 1.0
# An attempt holds its record this long; a replica that died mid-attempt leaves it to another after that.
ATTEMPT_LEASE = 30.0
TIMEOUT = 10.0
# What one attempt may take in all, however the receiver trickles its answer (TIMEOUT bounds each read only; a header
# byte every 3 s held an attempt for as long as the receiver liked, issue 23). Well under ATTEMPT_LEASE.
ATTEMPT_DEADLINE = 15.0
SEND_CONCURRENCY = 8
# Attempts of one webhook at once: a slow receiver holds at most this many of the SEND_CONCURRENCY slots.
WEBHOOK_CONCURRENCY = 2
# Announced only when this recent: older ones' delivery records may have expired, and would be sent again.
ANNOUNCE_WITHIN = DELIVERY_TTL - 24 * 3600.0
NEW_ITEMS = "subscription.new_items"


def job_body(view: JobSummary, public_url: str | None) -> dict[str, Any]:
    """A finished job as a notification tells it: its summary, and its files relative to the media root with their
    absolute URLs (TUBEFLOW_PUBLIC_URL; null when it is not set)."""
    body = view.summary().model_dump(mode="json") if isinstance(view, JobView) else view.model_dump(mode="json")
    files = view_files(view) if isinstance(view, JobView) else []
    base = public_url.rstrip("/") if public_url else None
    body["files"] = [{"path": f, "url": f"{base}/media/{quote(f)}" if base else None} for f in files]
    return body


def job_message(summary: JobSummary) -> tuple[str, str]:
    title = f"tubeflow: {summary.status} — {summary.title or summary.url}"
    lines = [f"{summary.download.completed} of {summary.download.total} items", summary.url]
    if summary.error is not None:
        lines.insert(0, f"{summary.error.code}: {summary.error.message}")
    return title, "\n".join(lines)


class Notifier:
    def __init__(
        self,
        webhooks: WebhookStore,
        deliveries: KeyValue,
        policy: AddressPolicy,
        first_retry: float = 5.0,
        *,
        jobs: KeyValue | None = None,
        public_url: str | None = None,
        apprise: AppriseSender | None = None,
        servers: list[MediaServer] | None = None,
        library_root: str = "/",
        refresh_delay: float = 30.0,
    ) -> None:
        self._jobs, self._public_url, self._apprise = jobs, public_url, apprise
        # Media servers told to scan where files landed (services.notifier.library).
        self._servers = {server.name: server for server in servers or []}
        self._library_root, self._refresh_delay = library_root, refresh_delay
        self._first_retry = first_retry
        self._webhooks = webhooks
        self._deliveries = deliveries
        self._policy = policy
        self._seen: set[tuple[str, int, str]] = set()
        self._wake = asyncio.Event()
        # Pending deliveries (key -> when due), kept from the bucket's writes; the ones being attempted here.
        self._pending: dict[str, float] = {}
        self._sending: set[str] = set()
        self._attempts: set[asyncio.Task] = set()
        self._send_slots = asyncio.Semaphore(SEND_CONCURRENCY)
        self._webhook_slots: dict[str, asyncio.Semaphore] = {}

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
        if summary.finished_at is None or time.time() - summary.finished_at.timestamp() > ANNOUNCE_WITHIN:
            return
        hooks = [
            w
            for w in await self._webhooks.all()
            if event in w.events and summary.finished_at >= w.created_at and w.hears(summary.owner)
        ]
        if hooks:
            stored = await load(self._jobs, summary.id) if self._jobs is not None else None
            body = {"event": event, "job": job_body(stored.view() if stored is not None else summary, self._public_url)}
            for webhook in hooks:
                await self._record(webhook.id, summary.id, delivery_id(webhook.id, summary.id, summary.retries, event),
                                   event, body)  # fmt: skip
        if self._apprise is not None and summary.finished_at.timestamp() >= self._apprise.since:
            await self._apprise.send_once(f"{event}:{summary.id}:{summary.retries}", *job_message(summary))
        if self._servers and summary.status in ("completed", "partial") and self._jobs is not None:
            stored = await load(self._jobs, summary.id)
            folders = landed_folders(view_files(stored.view())) if stored is not None else []
            for server in self._servers.values():
                if folders:
                    await self._ask_scan(server.name, folders)

    async def _ask_scan(self, server: str, folders: list[str]) -> None:
        """Add ``folders`` to this window's scan request for ``server`` (made by the first replica, extended by
        compare-and-set while it has not gone out; once it has, the next window's)."""
        window = int(time.time() // self._refresh_delay)
        for _ in range(20):
            key = f"{LIBRARY_PREFIX}.{server}.{window}"
            record = Delivery(
                id=f"{server}-{window}",
                webhook=LIBRARY_PREFIX,
                event="library.refresh",
                job_id=server,
                body={"server": server, "paths": folders[:MAX_PATHS]},
                next_at=(window + 1) * self._refresh_delay,
            )
            try:
                await self._deliveries.create(key, record.encode())
                self._wake.set()
                return
            except KeyWrongLastSequenceError:
                pass
            try:
                entry = await self._deliveries.get(key)
            except KeyNotFoundError:
                continue
            held = Delivery.decode(entry.value or b"{}")
            if held.status != "pending" or held.attempts:
                window += 1  # this window's request went out: the folders go with the next one
                continue
            paths = list(dict.fromkeys([*held.body.get("paths", []), *folders]))[:MAX_PATHS]
            if paths == held.body.get("paths"):
                return
            held.body = {**held.body, "paths": paths}
            with contextlib.suppress(KeyWrongLastSequenceError):
                await self._deliveries.update(key, held.encode(), last=entry.revision)
                return
        log.warning("scan of %s by %s not asked: the request kept changing", folders[:3], server)

    def on_subscription(self, event: Any, view: SubscriptionView | None) -> None:
        """A check that made jobs is a batch of new items: announced once per check."""
        if event.type == "subscription.checked" and event.data.new and view is not None and event.seq:
            asyncio.ensure_future(self._announce_new_items(event, view))

    async def _announce_new_items(self, event: Any, view: SubscriptionView) -> None:
        if time.time() - event.occurred_at.timestamp() > ANNOUNCE_WITHIN:
            return
        subscription = {
            "id": view.id,
            "name": view.settings.name,
            "url": view.settings.url,
            "source_title": view.source_title,
        }
        items = [entry.model_dump(mode="json") for entry in event.data.new]
        body = {"event": NEW_ITEMS, "subscription": subscription, "items": items}
        for webhook in await self._webhooks.all():
            if NEW_ITEMS in webhook.events and event.occurred_at >= webhook.created_at and webhook.hears(view.owner):
                await self._record(webhook.id, view.id, delivery_id(webhook.id, view.id, event.seq, NEW_ITEMS),
                                   NEW_ITEMS, body)  # fmt: skip
        if self._apprise is not None and event.occurred_at.timestamp() >= self._apprise.since:
            title = f"tubeflow: {len(items)} new from {view.settings.name or view.source_title or view.settings.url}"
            lines = [entry.title or entry.url for entry in event.data.new[:20]]
            await self._apprise.send_once(f"{NEW_ITEMS}:{view.id}:{event.seq}", title, "\n".join(lines))

    async def _record(self, webhook: str, subject_id: str, delivery: str, event: str, body: dict[str, Any]) -> None:
        record = Delivery(
            id=delivery, webhook=webhook, event=event, job_id=subject_id, body={**body, "delivery": delivery}
        )
        try:
            await self._deliveries.create(f"{webhook}.{record.id}", record.encode())
        except KeyWrongLastSequenceError:
            return  # another replica (or this one before a restart) has it
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
            if self._attempts:
                # Attempts under way finish (or time out) before the client closes; one cut short is tried again.
                await asyncio.wait(set(self._attempts), timeout=TIMEOUT + 1.0)

    def on_delivery(self, key: str, data: bytes) -> None:
        """A delivery record written (by any replica): kept in the index of pending ones while it is pending."""
        if key.startswith(APPRISE_RECORD):
            return  # Apprise's sent-once marks share the bucket; they are not webhook deliveries
        try:
            delivery = Delivery.decode(data)
        except (ValueError, TypeError):
            return
        if delivery.status == "pending":
            self._pending[key] = delivery.next_at
            if delivery.next_at <= time.time():
                self._wake.set()
        else:
            self._pending.pop(key, None)

    def on_delivery_deleted(self, key: str) -> None:
        self._pending.pop(key, None)

    async def _attempt_due(self, client: httpx.AsyncClient) -> None:
        """Start an attempt of every pending delivery that is due (from the index: the bucket is never scanned),
        at most SEND_CONCURRENCY at once, so a slow receiver holds one of them and never the others."""
        now = time.time()
        due = sorted((at, key) for key, at in self._pending.items() if at <= now and key not in self._sending)
        for _, key in due:
            self._sending.add(key)
            task = asyncio.create_task(self._attempt(client, key))
            self._attempts.add(task)
            task.add_done_callback(lambda t, key=key: (self._sending.discard(key), self._attempts.discard(t)))

    async def _attempt(self, client: httpx.AsyncClient, key: str) -> None:
        try:
            await self._attempt_one(client, key)
        except Exception as exc:  # NATS away for a moment: the record is still pending, tried again on a tick
            log.warning("delivery %s: %s", key, exc)

    async def _attempt_one(self, client: httpx.AsyncClient, key: str) -> None:
        # Kept per webhook id for the process's life: at most MAX_WEBHOOKS of them.
        slots = self._webhook_slots.setdefault(key.partition(".")[0], asyncio.Semaphore(WEBHOOK_CONCURRENCY))
        async with slots, self._send_slots:
            await self._attempt_held(client, key)

    async def _attempt_held(self, client: httpx.AsyncClient, key: str) -> None:
        try:
            entry = await self._deliveries.get(key)
        except KeyNotFoundError:
            self._pending.pop(key, None)
            return
        delivery = Delivery.decode(entry.value or b"{}")
        now = time.time()
        if delivery.status != "pending" or delivery.next_at > now:
            self.on_delivery(key, entry.value or b"{}")
            return
        delivery.attempts += 1
        delivery.next_at = now + ATTEMPT_LEASE
        try:
            revision = await self._deliveries.update(key, delivery.encode(), last=entry.revision)
        except KeyWrongLastSequenceError:
            return  # another replica took this attempt
        self._pending[key] = delivery.next_at
        if key.startswith(f"{LIBRARY_PREFIX}."):
            await self._refresh(client, delivery)
            with contextlib.suppress(KeyWrongLastSequenceError):
                await self._deliveries.update(key, delivery.encode(), last=revision)
            self.on_delivery(key, delivery.encode())
            return
        webhook = await self._webhooks.get(delivery.webhook)
        if webhook is None:
            delivery.status, delivery.last_error = "dead", "the webhook was deleted"
        else:
            await self._send(client, webhook, delivery)
        with contextlib.suppress(KeyWrongLastSequenceError):
            await self._deliveries.update(key, delivery.encode(), last=revision)
        self.on_delivery(key, delivery.encode())

    async def _send(self, client: httpx.AsyncClient, webhook: Webhook, delivery: Delivery) -> None:
        body = json.dumps(delivery.body).encode()
        now = time.time()
        try:
            async with asyncio.timeout(ATTEMPT_DEADLINE):
                await self._check_address(webhook.url)
                sent = headers(webhook.secret, int(now), body, delivery.id, delivery.event)
                # Only the status matters: the body is never read (an endless one was read whole, 128 MiB, issue 23).
                async with client.stream("POST", webhook.url, content=body, headers=sent) as response:
                    status = response.status_code
        except TimeoutError:
            delivery.failed(f"no answer within {ATTEMPT_DEADLINE:g} s", None, now, self._first_retry)
            return
        except (httpx.HTTPError, OSError) as exc:
            delivery.failed(f"{type(exc).__name__}: {exc}", None, now, self._first_retry)
            return
        if 200 <= status < 300:
            delivery.succeeded(status, now)
        else:
            delivery.failed(f"HTTP {status}", status, now, self._first_retry)

    async def _refresh(self, client: httpx.AsyncClient, delivery: Delivery) -> None:
        """One scan request to a media server (its folders as the server sees them); failures are retried later."""
        server = self._servers.get(str(delivery.body.get("server")))
        now = time.time()
        if server is None:
            delivery.status, delivery.last_error = "dead", "the media server is not configured any more"
            return
        paths = [server_path(self._library_root, p) for p in delivery.body.get("paths", [])]
        try:
            async with asyncio.timeout(ATTEMPT_DEADLINE):
                status = await server.refresh(client, paths)
        except RefreshFailed as exc:
            delivery.failed(str(exc), exc.status, now, self._first_retry)
            log.warning("%s scan of %d folder(s) failed: %s", server.name, len(paths), exc)
            return
        except (TimeoutError, httpx.HTTPError, OSError) as exc:
            delivery.failed(f"{type(exc).__name__}: {exc}", None, now, self._first_retry)
            log.warning("%s scan of %d folder(s) failed: %s", server.name, len(paths), exc)
            return
        delivery.succeeded(status, now)
        log.info("%s asked to scan %d folder(s)", server.name, len(paths))

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
        deliveries = await infra.js.key_value(DELIVERIES_BUCKET)
        hooks = await infra.js.key_value(WEBHOOKS_BUCKET)
        urls = parse_urls(settings.apprise_urls)
        kv = await jobs_bucket(infra.js)
        since = await configured_since(hooks, time.time()) if urls else 0.0
        apprise = AppriseSender(urls, deliveries, since, settings.address_policy()) if urls else None
        notifier = Notifier(
            WebhookStore(hooks),
            deliveries,
            settings.address_policy(),
            first_retry=settings.webhook_retry_delay,
            jobs=kv,
            public_url=settings.public_url,
            apprise=apprise,
            servers=media_servers(settings),
            library_root=settings.library_path or str(settings.media_dir.resolve()),
            refresh_delay=settings.library_refresh_delay,
        )
        records = await watch_bucket(
            infra.nc, DELIVERIES_BUCKET, on_put=notifier.on_delivery, on_delete=notifier.on_delivery_deleted
        )
        for key, value in (await read_bucket(deliveries)).items():
            notifier.on_delivery(key, value)
        sub = await watch_bucket(infra.nc, JOBS_BUCKET, on_put=notifier.on_summary, on_delete=lambda key: None)
        subscriptions = SubscriptionBook(on_event=notifier.on_subscription)
        try:
            for key, value in (await read_bucket(kv, keys=SUMMARY_KEYS)).items():
                notifier.on_summary(key, value)
            await subscriptions.start(infra.js)
            await notifier.run(stop)
        finally:
            await subscriptions.stop()
            await sub.unsubscribe()
            await records.unsubscribe()
