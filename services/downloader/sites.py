"""Per-site limits shared by every downloader process: TUBEFLOW_SITE_CONCURRENCY (downloads at a time) and
TUBEFLOW_SITE_RATE (downloads started per minute), e.g. ``youtube.com=2,*=6``.

A site is the URL's host without ``www.``; a setting's key matches its host and every subdomain of it, ``*`` every
other site (each on its own). Concurrency is a set of leases in the sites bucket (``lease.<site>.<n>``, n < the
limit), each created by the download that holds it, refreshed while it runs and deleted after; a dead worker's lease
expires with the bucket's TTL. The rate is a count per site and minute, raised by compare-and-set.

An item whose site is at its limit waits (`download.waiting`, code `site_limit`, saying which limit) without holding
a download slot, so items of other sites go on meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from contracts import events as ev
from services.runtime.nats.topology import SITE_LEASE_TTL
from services.runtime.sitelimits import limit_for, parse_limits, site_of

log = logging.getLogger("tubeflow.sites")

CHECK_EVERY = 1.0
Release = Callable[[], Awaitable[None]]


def _kv_safe(site: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in site)[:200]


@dataclass
class SiteGate:
    kv: KeyValue
    worker: str
    concurrency: dict[str, int]
    rate: dict[str, int]
    # Says once per wait why an item waits: (event, code, message).
    announce: Callable[[ev.ItemQueuedEvent, str, str], Awaitable[None]]
    check_every: float = CHECK_EVERY

    @classmethod
    def from_settings(cls, settings, kv: KeyValue, worker: str, downloader) -> "SiteGate | None":  # noqa: ANN001
        concurrency = parse_limits(settings.site_concurrency, "TUBEFLOW_SITE_CONCURRENCY")
        rate = parse_limits(settings.site_rate, "TUBEFLOW_SITE_RATE")
        if not concurrency and not rate:
            return None
        return cls(kv, worker, concurrency, rate, downloader.announce_waiting)

    async def __call__(self, event: ev.ItemQueuedEvent) -> Release:
        """Wait until the item's site has room; returns what gives the room back."""
        site = site_of(event.data.url)
        said = False
        while True:
            reason = None
            lease = await self._lease(site)
            if isinstance(lease, str):
                reason = lease
            else:
                counted = await self._count(site)
                if counted is None:
                    return lease
                await lease()
                reason = counted
            if not said:
                log.info("item %s of job %s waits: %s", event.item_id, event.job_id, reason)
                await self.announce(event, "site_limit", reason)
                said = True
            await asyncio.sleep(self.check_every)

    async def _lease(self, site: str) -> Release | str:
        limit = limit_for(site, self.concurrency)
        if limit is None:
            return _nothing
        key, most = limit
        for n in range(most):
            name = f"lease.{_kv_safe(key)}.{n}"
            try:
                revision = await self.kv.create(name, self.worker.encode())
            except KeyWrongLastSequenceError:
                continue
            return self._held(name, revision)
        return f"{key} allows {most} download(s) at a time (TUBEFLOW_SITE_CONCURRENCY); all are running"

    def _held(self, name: str, revision: int) -> Release:
        async def refresh() -> None:
            nonlocal revision
            while True:
                await asyncio.sleep(SITE_LEASE_TTL / 3)
                try:
                    revision = await self.kv.update(name, self.worker.encode(), last=revision)
                except Exception as exc:  # lost (NATS away past the TTL): the next download counts again
                    log.warning("site lease %s not refreshed: %s", name, exc)

        refresher = asyncio.create_task(refresh())

        async def release() -> None:
            refresher.cancel()
            with contextlib.suppress(Exception):
                await self.kv.delete(name, last=revision)

        return release

    async def _count(self, site: str) -> str | None:
        """Count one download start against the site's rate (None: counted), or say why it must wait."""
        limit = limit_for(site, self.rate)
        if limit is None:
            return None
        key, most = limit
        name = f"rate.{_kv_safe(key)}.{int(time.time() // 60)}"
        for _ in range(20):
            try:
                entry = await self.kv.get(name)
            except KeyNotFoundError:
                try:
                    await self.kv.create(name, b"1")
                    return None
                except KeyWrongLastSequenceError:
                    continue
            count = int(entry.value or b"0")
            if count >= most:
                return (
                    f"{key} allows {most} download(s) started per minute (TUBEFLOW_SITE_RATE); this minute's are used"
                )
            try:
                await self.kv.update(name, str(count + 1).encode(), last=entry.revision)
                return None
            except KeyWrongLastSequenceError:
                continue
        return f"{key}: too many downloads starting at once; trying again"


async def _nothing() -> None:
    return None
