"""Automatic cool-down of a site that pushes back (issue 27, TUBEFLOW_SITE_COOLDOWN): a 429, a bot check or a burst
of 403s from a site stops every downloader and the scheduler from sending it new requests for a while, twice as long
on each repeat, back to the first length after downloads from it went well again.

What is in force is ``cool.<site>`` in the pacing bucket (a `SiteCooldown`), changed by compare-and-set; every
process keeps a copy in memory from the bucket's own messages, so asking whether a site cools down costs nothing
(no round trip per item). Each cool-down and each early end is also recorded as an event on TUBEFLOW_SYSTEM.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from contracts.system import SiteCooldown, SiteCooling, SiteResumed, SiteResumedData
from services.runtime.nats.kv import read_bucket, watch_bucket
from services.runtime.nats.publish import publish_system
from services.runtime.nats.topology import PACING_BUCKET
from services.runtime.sitelimits import site_key, site_of

log = logging.getLogger("tubeflow.cooldown")

COOL_PREFIX = "cool."
BURST_PREFIX = "burst."
# 403s from one site within BURST_WINDOW seconds (over every process) that make a burst.
BURST = 3
BURST_WINDOW = 60.0
# Downloads that go well after a cool-down ended before the next one starts at the first length again.
RESET_AFTER = 3
MAX_COOLDOWN = 86_400.0
# An answer that starts a cool-down at once.
AT_ONCE = {"site_rate_limited", "bot_check"}
BURST_CODES = {"http_403"}


def cool_key(site: str) -> str:
    return COOL_PREFIX + site_key(site)


def _parents(site: str) -> list[str]:
    """``a.b.example.com`` -> itself, ``b.example.com``, ``example.com``: a cool-down of a site covers its
    subdomains."""
    parts = site.split(".")
    return [".".join(parts[n:]) for n in range(max(1, len(parts) - 1))]


def decode(value: bytes | None) -> SiteCooldown | None:
    try:
        return SiteCooldown.model_validate_json(value or b"")
    except ValidationError:
        return None


async def read_cooldowns(kv: KeyValue) -> list[SiteCooldown]:
    """Every cool-down recorded (in force or ended and still counting successes), read once."""
    found = [decode(value) for value in (await read_bucket(kv, COOL_PREFIX + ">")).values()]
    return sorted((c for c in found if c is not None), key=lambda c: c.site)


class Cooldowns:
    """This process's view of the sites cooling down, and the one way to start, end or reset one."""

    def __init__(self, js: JetStreamContext, kv: KeyValue, base: float, worker: str) -> None:
        self._js, self._kv, self._base, self._worker = js, kv, base, worker
        self._known: dict[str, SiteCooldown] = {}
        self._sub: Subscription | None = None

    @property
    def enabled(self) -> bool:
        return self._base > 0

    async def start(self, nc: Any) -> "Cooldowns":
        self._sub = await watch_bucket(
            nc, PACING_BUCKET, on_put=self._put, on_delete=self._gone, keys=COOL_PREFIX + ">"
        )
        for cooldown in await read_cooldowns(self._kv):
            self._known.setdefault(cool_key(cooldown.site), cooldown)
        return self

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as exc:  # the connection is closing anyway
                log.debug("cool-down watch: %s", exc)

    def _put(self, key: str, value: bytes) -> None:
        cooldown = decode(value)
        if cooldown is not None:
            self._known[key] = cooldown

    def _gone(self, key: str) -> None:
        self._known.pop(key, None)

    def cooling(self, url_or_site: str, now: datetime | None = None) -> SiteCooldown | None:
        """The cool-down in force for a URL's site (or a site), if any."""
        if not self._known:
            return None
        site = site_of(url_or_site) if "/" in url_or_site else url_or_site
        now = now or datetime.now(timezone.utc)
        for name in _parents(site):
            cooldown = self._known.get(cool_key(name))
            if cooldown is not None and cooldown.in_force(now):
                return cooldown
        return None

    async def strike(self, url: str, code: str, message: str) -> SiteCooldown | None:
        """A request to the URL's site was refused with ``code``: start its cool-down if that calls for one (or say
        the one in force). None: no cool-down."""
        if not self.enabled or (code not in AT_ONCE and code not in BURST_CODES):
            return None
        site = site_of(url)
        if not site:
            return None
        if (cooling := self.cooling(site)) is not None:
            return cooling
        if code in BURST_CODES and not await self._burst(site):
            return None
        return await self._start(site, code, message)

    async def _burst(self, site: str) -> bool:
        """Count a 403 from the site; True when it makes BURST within BURST_WINDOW over every process."""
        name = BURST_PREFIX + cool_key(site).removeprefix(COOL_PREFIX)
        for _ in range(20):
            now = time.time()
            try:
                entry = await self._kv.get(name)
                revision: int | None = entry.revision
                seen = [t for t in json.loads(entry.value or b"[]") if now - float(t) < BURST_WINDOW]
            except KeyNotFoundError:
                revision, seen = None, []
            except ValueError:
                revision, seen = None, []
            seen = [*seen, now][-BURST:]
            value = json.dumps(seen).encode()
            try:
                if revision is None:
                    await self._kv.put(name, value)
                else:
                    await self._kv.update(name, value, last=revision)
            except KeyWrongLastSequenceError:
                continue
            return len(seen) >= BURST
        return False

    async def _start(self, site: str, code: str, message: str) -> SiteCooldown | None:
        key = cool_key(site)
        for _ in range(20):
            now = datetime.now(timezone.utc)
            try:
                entry = await self._kv.get(key)
                before, revision = decode(entry.value), entry.revision
            except KeyNotFoundError:
                before, revision = None, None
            if before is not None and before.in_force(now):
                return before  # another process started it meanwhile
            level = before.level + 1 if before is not None else 1
            length = min(self._base * 2 ** (level - 1), MAX_COOLDOWN)
            cooldown = SiteCooldown(
                site=site,
                until=now + timedelta(seconds=length),
                since=now,
                code=code,
                message=message,
                level=level,
                worker=self._worker,
            )
            try:
                value = cooldown.model_dump_json().encode()
                if revision is None:
                    await self._kv.create(key, value)
                else:
                    await self._kv.update(key, value, last=revision)
            except KeyWrongLastSequenceError:
                continue
            self._known[key] = cooldown
            log.warning("%s cools down for %.0f s (%s: %s)", site, length, code, message[:200])
            await self._record(SiteCooling(event_id=_event_id(), type="site.cooling", occurred_at=now, data=cooldown))
            return cooldown
        return None

    async def succeeded(self, url: str) -> None:
        """A download from the URL's site went well: after RESET_AFTER of them once its cool-down ended, the next
        cool-down starts at the first length again."""
        site = site_of(url)
        for name in _parents(site):
            key = cool_key(name)
            known = self._known.get(key)
            if known is None or known.in_force(datetime.now(timezone.utc)):
                continue
            await self._change(key, lambda c: c.model_copy(update={"successes": c.successes + 1}))

    async def resume(self, site: str) -> SiteCooldown | None:
        """End a site's cool-down now (someone asked); its level stays, so a repeat still lasts longer. None: none in
        force."""
        key = cool_key(site)
        now = datetime.now(timezone.utc)
        ended = await self._change(key, lambda c: c.model_copy(update={"until": now}) if c.in_force(now) else None)
        if ended is not None:
            await self._record(
                SiteResumed(
                    event_id=_event_id(),
                    type="site.resumed",
                    occurred_at=now,
                    data=SiteResumedData(site=site, by="request"),
                )
            )
        return ended

    async def _change(self, key: str, change: Any) -> SiteCooldown | None:
        """Apply ``change`` to a cool-down by compare-and-set (None from it: leave it); one reset by RESET_AFTER
        successes is deleted."""
        for _ in range(20):
            try:
                entry = await self._kv.get(key)
            except KeyNotFoundError:
                return None
            current = decode(entry.value)
            changed = change(current) if current is not None else None
            if changed is None:
                return None
            try:
                if changed.successes >= RESET_AFTER:
                    await self._kv.delete(key, last=entry.revision)
                    log.info("%s went well again: its next cool-down starts short", changed.site)
                    await self._record(
                        SiteResumed(
                            event_id=_event_id(),
                            type="site.resumed",
                            occurred_at=datetime.now(timezone.utc),
                            data=SiteResumedData(site=changed.site, by="successes"),
                        )
                    )
                else:
                    await self._kv.update(key, changed.model_dump_json().encode(), last=entry.revision)
            except KeyWrongLastSequenceError:
                continue
            return changed
        return None

    async def _record(self, event: SiteCooling | SiteResumed) -> None:
        try:
            await publish_system(self._js, event)
        except Exception as exc:  # the cool-down itself is in force; its record is what is missing
            log.warning("%s not recorded: %s", event.type, exc)


def _event_id() -> str:
    return uuid.uuid4().hex
