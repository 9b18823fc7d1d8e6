"""Progress throttling shared by the downloader and the extractor.

Reports arrive often (yt-dlp hooks on a worker thread, ffmpeg's -progress lines); the pump sends the newest one
at most every ``interval`` seconds unless the percentage moved by ``min_step`` or more, never reorders, and on
``close`` always sends the last report it has not sent yet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Generic, TypeVar

log = logging.getLogger("tubeflow.progress")

Report = TypeVar("Report")


class ProgressPump(Generic[Report]):
    def __init__(
        self,
        send: Callable[[Report], Awaitable[object]],
        percent_of: Callable[[Report], float | None],
        *,
        interval: float,
        min_step: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._percent_of = percent_of
        self._interval = interval
        self._min_step = min_step
        self._clock = clock
        self._latest: Report | None = None
        self._sent: Report | None = None
        self._sent_percent: float | None = None
        self._last_sent = float("-inf")
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set while the newest report has been sent (or there is none)
        self._idle.set()
        self._urgent = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self.sent_count = 0

    def start(self) -> "ProgressPump[Report]":
        self._task = asyncio.create_task(self._run(), name="progress-pump")
        return self

    def offer(self, report: Report) -> None:
        """Called on the event loop (from a worker thread use ``loop.call_soon_threadsafe(pump.offer, r)``)."""
        self._latest = report
        self._idle.clear()
        self._wake.set()

    async def flush(self) -> None:
        """Send the newest report now, throttle or not, and return once it is sent: what is published next (e.g. a
        post-processing step) then follows every report of the bytes before it."""
        self._urgent = True
        self._wake.set()
        try:
            await self._idle.wait()
        finally:
            self._urgent = False

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task

    def _moved_enough(self, report: Report) -> bool:
        percent = self._percent_of(report)
        if percent is None or self._sent_percent is None:
            return self._sent_percent is None and percent is not None
        return percent - self._sent_percent >= self._min_step or percent >= 100.0 > self._sent_percent

    async def _run(self) -> None:
        while True:
            latest = self._latest
            if latest is None or latest is self._sent:
                self._idle.set()
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            delay = self._last_sent + self._interval - self._clock()
            if delay > 0 and not self._closed and not self._urgent and not self._moved_enough(latest):
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                continue
            self._sent = latest
            self._sent_percent = self._percent_of(latest)
            self._last_sent = self._clock()
            try:
                await self._send(latest)
                self.sent_count += 1
            except Exception as exc:  # progress is advisory: a lost report is replaced by the next one
                log.warning("progress report not sent: %s", exc)


class HandoffGate:
    """The pump's rule, applied where reports are made (e.g. yt-dlp's thread) so that reports the pump would only
    replace are not handed to the event loop at all: pass one if a quarter of ``interval`` passed since the last
    that passed, or the percentage moved by ``min_step``. Used by one thread."""

    def __init__(self, interval: float, min_step: float, clock: Callable[[], float] = time.monotonic) -> None:
        # A quarter of the pump's interval: the pump still decides, the gate only thins the stream out.
        self._spacing = interval / 4
        self._min_step = min_step
        self._clock = clock
        self._last = float("-inf")
        self._last_percent: float | None = None

    def open(self, percent: float | None) -> bool:
        now = self._clock()
        moved = percent is not None and (
            self._last_percent is None or percent - self._last_percent >= self._min_step or percent >= 100.0
        )
        if not moved and now - self._last < self._spacing:
            return False
        self._last = now
        if percent is not None:
            self._last_percent = percent
        return True
