"""A lease in a KV bucket: one holder at a time among many processes, taken over when its holder stops renewing.

The value says who holds it until when; every write is a compare-and-set on the revision read (fencing: a holder
that was paused past its expiry finds its revision gone and stops). Expiry is read off the value, so a lease of a
few seconds (tests) and one of minutes work on the same bucket; the holders' clocks are assumed roughly in step
(NTP), and a margin of a second covers the rest."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Callable

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

log = logging.getLogger("tubeflow.lease")

SKEW = 1.0


class Lease:
    def __init__(
        self, kv: KeyValue, key: str, holder: str, period: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._kv, self._key, self.holder, self.period, self._clock = kv, key, holder, period, clock
        self.revision: int | None = None
        self.lost = asyncio.Event()
        self.gained = asyncio.Event()
        # When another holder's lease runs out (its "until" and the clock margin): a standby tries again then, not
        # up to a third of a period later (a dead holder was replaced after lease + 1 s + lease/3, issue 23).
        self._free_at: float | None = None

    @property
    def held(self) -> bool:
        return self.revision is not None

    def _value(self) -> bytes:
        return json.dumps({"holder": self.holder, "until": self._clock() + self.period}).encode()

    async def try_hold(self) -> bool:
        """Take the lease when it is free or expired, or renew it when it is ours. True while it is ours."""
        try:
            if self.revision is not None:
                self.revision = await self._kv.update(self._key, self._value(), last=self.revision)
                return True
            try:
                entry = await self._kv.get(self._key)
            except KeyNotFoundError:
                self.revision = await self._kv.create(self._key, self._value())
            else:
                current = json.loads(entry.value or b"{}")
                until = current.get("until", 0)
                until = float(until) if isinstance(until, (int, float)) else 0.0
                if current.get("holder") != self.holder and until + SKEW > self._clock():
                    self._free_at = until + SKEW
                    return False
                self.revision = await self._kv.update(self._key, self._value(), last=entry.revision)
        except KeyWrongLastSequenceError:
            self._drop("another process took the lease")
            return False
        self.lost.clear()
        if not self.gained.is_set():
            log.info("%s holds the lease %s", self.holder, self._key)
            self.gained.set()
        return True

    def _drop(self, why: str) -> None:
        if self.revision is not None:
            log.warning("%s lost the lease %s: %s", self.holder, self._key, why)
        self.revision = None
        self.gained.clear()
        self.lost.set()

    async def keep(self, stop: asyncio.Event) -> None:
        """Take or renew the lease every third of its period until ``stop``; then give it up. A standby tries again
        the moment the holder's lease runs out, so a dead holder is replaced within one period and the margin."""
        while not stop.is_set():
            try:
                await self.try_hold()
            except Exception as exc:  # NATS away: a holder that can't renew must assume it lost the lease
                self._drop(f"renewal failed: {exc}")
            wait = self.period / 3
            if not self.held and self._free_at is not None:
                wait = max(0.05, min(wait, self._free_at - self._clock() + 0.05))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
        await self.release()

    async def release(self) -> None:
        """Hand the lease over at once (a stopping holder), so the next one need not wait for it to expire."""
        if self.revision is None:
            return
        revision, self.revision = self.revision, None
        with contextlib.suppress(Exception):
            await self._kv.delete(self._key, last=revision)
