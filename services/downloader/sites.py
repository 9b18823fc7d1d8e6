"""Per-site limits shared by every downloader process: TUBEFLOW_SITE_CONCURRENCY (downloads at a time) and
TUBEFLOW_SITE_RATE (downloads started per minute), e.g. ``youtube.com=2,*=6``; TUBEFLOW_SITE_PACING's gap between
downloads from one site (``youtube.com=downloads:5-30s``); and the sites cooling down (services.runtime.cooldown).

A site is the URL's host without ``www.``; a setting's key matches its host and every subdomain of it, ``*`` every
other site (each on its own). Concurrency is a set of leases in the sites bucket (``lease.<site>.<n>``, n < the
limit), each created by the download that holds it, refreshed while it runs and deleted after; a dead worker's lease
expires with the bucket's TTL. The rate is a count per site and minute, raised by compare-and-set. A paced site's turn
is one key in the pacing bucket, taken by compare-and-set and pending until the download's first bytes come; the
next turn is then a random gap in the site's range after that moment (a turn left pending by a dead process lapses
after PENDING_MOST).

An item whose site is at its limit, paced or cooling down waits (`download.waiting`, code `site_limit`,
`site_pacing` or `site_cooldown`, saying why and, where known, until when) without holding a download slot, so items
of other sites go on meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Awaitable, Callable

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from contracts import events as ev
from contracts.system import SiteCooldown
from services.runtime.cooldown import Cooldowns
from services.runtime.nats.topology import SITE_LEASE_TTL
from services.runtime.sitelimits import Pacing, limit_for, pacing_for, parse_limits, parse_pacing, site_key, site_of

log = logging.getLogger("tubeflow.sites")

CHECK_EVERY = 1.0
# A paced item looks again at least this often (another downloader may have taken the turn it waits for).
PACING_LOOK = 5.0
# ... and this often while a turn is pending (its download's start decides when the next one may go).
PENDING_LOOK = 0.25
# A turn whose download has not begun within this long no longer holds the site (its process died, or its
# extraction is that slow).
PENDING_MOST = 120.0
Release = Callable[[], Awaitable[None]]
# The paced turn of the download running in this task (set by the ticket loop), told when its first bytes come.
current_turn: ContextVar["PacedTurn | None"] = ContextVar("current_turn", default=None)


@dataclass
class SiteGate:
    kv: KeyValue
    worker: str
    concurrency: dict[str, int]
    rate: dict[str, int]
    # Says once per wait why an item waits: (event, code, message, until).
    announce: Callable[[ev.ItemQueuedEvent, str, str, datetime | None], Awaitable[None]]
    check_every: float = CHECK_EVERY
    pacing: dict[str, Pacing] = field(default_factory=dict)
    # When each paced site may next start a download (the pacing bucket); None without TUBEFLOW_SITE_PACING.
    pace_kv: KeyValue | None = None
    # Sites cooling down (TUBEFLOW_SITE_COOLDOWN): none of their items starts until the cool-down is over.
    cooldowns: Cooldowns | None = None

    @classmethod
    def from_settings(  # noqa: ANN206
        cls,
        settings,
        kv: KeyValue,
        worker: str,
        downloader,
        pace_kv: KeyValue | None = None,  # noqa: ANN001
    ) -> "SiteGate | None":
        concurrency = parse_limits(settings.site_concurrency, "TUBEFLOW_SITE_CONCURRENCY")
        rate = parse_limits(settings.site_rate, "TUBEFLOW_SITE_RATE")
        pacing = {site: p for site, p in parse_pacing(settings.site_pacing).items() if p.downloads}
        cooldowns = downloader.cooldowns
        if not concurrency and not rate and not pacing and cooldowns is None:
            return None
        return cls(
            kv,
            worker,
            concurrency,
            rate,
            downloader.announce_waiting,
            pacing=pacing,
            pace_kv=pace_kv,
            cooldowns=cooldowns,
        )

    def free(self, event: ev.ItemQueuedEvent) -> bool:
        """The item's site has no limit, pace or cool-down: it starts without the gate (no round trip to NATS)."""
        if self.cooldowns is not None and self.cooldowns.cooling(event.data.url) is not None:
            return False
        if not self.concurrency and not self.rate and not self.pacing:
            return True
        site = site_of(event.data.url)
        return all(limit_for(site, limits) is None for limits in (self.concurrency, self.rate)) and (
            pacing_for(site, self.pacing) is None
        )

    async def __call__(self, event: ev.ItemQueuedEvent) -> Release:
        """Wait until the item's site has room; returns what gives the room back (a `PacedTurn` on a paced site)."""
        site = site_of(event.data.url)
        said: set[tuple[str, datetime | None]] = set()
        while True:
            cooling = self.cooldowns.cooling(site) if self.cooldowns is not None else None
            lease = await self._lease(site) if cooling is None else ""
            if cooling is not None:
                code, reason, until = "site_cooldown", _cooling_reason(cooling), cooling.until
            elif isinstance(lease, str):
                code, reason, until = "site_limit", lease, None
            else:
                paced = await self._pace(site)
                counted = await self._count(site) if isinstance(paced, PacedTurn) or paced is None else None
                if counted is None and not isinstance(paced, tuple):
                    return lease if paced is None else paced.holding(lease)
                if isinstance(paced, PacedTurn):
                    await paced.give_back()  # the rate said no: nothing started
                await lease()
                code, reason, until = ("site_limit", counted, None) if counted is not None else ("site_pacing", *paced)
            if (code, until) not in said:  # said once per reason (and per start time), not on every look
                log.info("item %s of job %s waits: %s", event.item_id, event.job_id, reason)
                await self.announce(event, code, reason, until)
                said.add((code, until))
            pause = self.check_every if until is None else (until - datetime.now(timezone.utc)).total_seconds()
            await asyncio.sleep(min(max(pause, 0.01), PACING_LOOK if until is not None else PENDING_LOOK))

    async def _pace(self, site: str) -> "PacedTurn | tuple[str, datetime | None] | None":
        """Take the site's turn to start a download (a `PacedTurn`; None: the site is not paced), or say why it must
        wait and until when (None: until the download starting now has begun). A turn is pending in the pacing
        bucket until its download's first bytes come (`PacedTurn.began`); the next turn is then a random gap in the
        site's range after that moment. Taken by compare-and-set: two downloaders never take the same turn."""
        paced = pacing_for(site, self.pacing)
        if paced is None or self.pace_kv is None:
            return None
        key, pacing = paced
        assert pacing.downloads is not None
        name = f"pace.{site_key(key)}"
        gap = f"{pacing.downloads[0]:g}-{pacing.downloads[1]:g} s"
        for _ in range(20):
            try:
                entry = await self.pace_kv.get(name)
            except KeyNotFoundError:
                entry = None
            now = time.time()
            next_at, pending = _turn(entry.value if entry is not None else None)
            if now < next_at:
                if pending:
                    return f"{key} is paced: a download from it is starting; the next starts {gap} after it", None
                until = datetime.fromtimestamp(next_at, timezone.utc)
                return f"{key} is paced: its next download starts at {until:%H:%M:%S} UTC ({gap} apart)", until
            claim = f"pending {now + PENDING_MOST}".encode()
            try:
                if entry is None:
                    revision = await self.pace_kv.create(name, claim)
                else:
                    revision = await self.pace_kv.update(name, claim, last=entry.revision)
                return PacedTurn(self.pace_kv, name, revision, pacing.downloads)
            except KeyWrongLastSequenceError:
                continue  # another downloader took this turn: look again
        return f"{key}: too many downloads starting at once; trying again", datetime.now(timezone.utc)

    async def _lease(self, site: str) -> Release | str:
        limit = limit_for(site, self.concurrency)
        if limit is None:
            return _nothing
        key, most = limit
        for n in range(most):
            name = f"lease.{site_key(key)}.{n}"
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
        name = f"rate.{site_key(key)}.{int(time.time() // 60)}"
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


def _cooling_reason(cooling: SiteCooldown) -> str:
    return (
        f"{cooling.site} cools down until {cooling.until:%H:%M:%S} UTC: it answered {cooling.code} "
        f"({cooling.message[:160]}); no requests go to it meanwhile"
    )


def _turn(value: bytes | None) -> tuple[float, bool]:
    """A pacing entry: (when the next turn may be taken, whether a download is still starting)."""
    text = (value or b"0").decode(errors="replace")
    pending = text.startswith("pending ")
    try:
        return float(text.removeprefix("pending ")), pending
    except ValueError:
        return 0.0, False


class PacedTurn:
    """A download's turn on a paced site. ``began()`` (on the loop, when the first bytes come) puts the site's next
    turn a random gap after now; awaiting the turn (its release) does so if the download never began. Only this turn's
    own entry is changed: a turn that outlived PENDING_MOST and was taken over leaves the new one alone."""

    def __init__(self, kv: KeyValue, name: str, revision: int, gap: tuple[float, float]) -> None:
        self._kv, self._name, self._revision, self._gap = kv, name, revision, gap
        self._setting: asyncio.Task | None = None
        self._lease: Release = _nothing

    def holding(self, lease: Release) -> "PacedTurn":
        """This turn, also giving back the site's concurrency lease at release."""
        self._lease = lease
        return self

    def began(self) -> None:
        if self._setting is None:
            self._setting = asyncio.ensure_future(self._set_next())

    async def _set_next(self) -> None:
        with contextlib.suppress(Exception):  # taken over meanwhile, or NATS away: the pending claim expires
            await self._kv.update(
                self._name, str(time.time() + random.uniform(*self._gap)).encode(), last=self._revision
            )

    async def give_back(self) -> None:
        """Nothing started on this turn: the next may be taken at once."""
        with contextlib.suppress(Exception):
            await self._kv.update(self._name, b"0", last=self._revision)

    async def __call__(self) -> None:
        self.began()
        assert self._setting is not None
        await self._setting
        await self._lease()
