"""An item's reports from yt-dlp's thread to the event loop: throttled progress, and post-processing steps in order."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
from datetime import datetime
from typing import Any, Awaitable, Callable

from contracts import events as ev
from services.runtime.cancellation import CancelToken
from services.runtime.throttle import HandoffGate, ProgressPump

log = logging.getLogger("tubeflow.downloader")


class ItemReports:
    """Hands an item's reports from yt-dlp's thread to the event loop: progress through the throttling pump, and
    post-processing steps (and their ffmpeg's progress, throttled like the bytes') each after a flush of the pump,
    in order, so a step's event never precedes the bytes before it."""

    def __init__(
        self,
        pump: ProgressPump[tuple[ev.DownloadProgress, datetime]],
        send_step: Callable[[dict[str, Any]], Awaitable[None]],
        token: CancelToken,
        worker: str,
        now: Callable[[], datetime],
        gate: HandoffGate,
        pp_gate: HandoffGate,
        began: Callable[[], None] | None = None,
        transfer: Any = None,
    ) -> None:
        self._pump = pump
        self._send_step = send_step
        self._token = token
        self._worker = worker
        self._now = now
        self._gate = gate
        self._pp_gate = pp_gate
        # Told (on the loop) when the first bytes come: a paced site's next turn counts from then.
        self._began = began
        # The download as the schedule sees it (services.downloader.schedule.Transfer): its bytes, liveness, size.
        self._transfer = transfer
        self._loop = asyncio.get_running_loop()
        self._steps: list[concurrent.futures.Future[None]] = []
        self._order = asyncio.Lock()
        # The handler's context (its trace span): step events published from yt-dlp's thread carry it too.
        self._context = contextvars.copy_context()

    async def _in_context(self, step: Awaitable[None]) -> None:
        await self._context.run(asyncio.ensure_future, step)

    def hook(self, d: dict[str, Any]) -> None:
        # Runs on yt-dlp's worker thread: stop if asked to, else hand the report to the loop without blocking.
        self._token.raise_if_tripped()
        if self._transfer is not None:
            self._transfer.saw(d)
        status = d.get("status")
        if self._began is not None and status in ("downloading", "recording", "finished"):
            self._loop.call_soon_threadsafe(self._began)
            self._began = None
        if status == "postprocess" or (status == "postprocessing" and self._pp_gate.open(_pp_percent(d))):
            step = self._step(d)
            self._steps.append(asyncio.run_coroutine_threadsafe(self._in_context(step), self._loop))
            return
        if status == "recording":
            if self._gate.open(None):
                report = ev.DownloadProgress(
                    worker=self._worker,
                    downloaded_bytes=int(d.get("downloaded_bytes") or 0),
                    speed=d.get("speed"),
                    recorded_seconds=d.get("recorded_seconds"),
                )
                self._loop.call_soon_threadsafe(self._pump.offer, (report, self._now()))
            return
        if status not in ("downloading", "finished"):
            return
        downloaded = int(d.get("downloaded_bytes") or 0)
        total = d.get("total_bytes") or d.get("total_bytes_estimate")
        # yt-dlp calls this for every block read; the pump would drop most of them anyway, so they are not handed to
        # the loop at all (each hand-off wakes it through a pipe).
        if status == "downloading" and not self._gate.open(100.0 * downloaded / total if total else None):
            return
        report = ev.DownloadProgress(
            worker=self._worker,
            downloaded_bytes=downloaded,
            total_bytes=_int_or_none(total),
            speed=d.get("speed"),
            eta=d.get("eta"),
            fragment_index=d.get("fragment_index"),
            fragment_count=d.get("fragment_count"),
            stream_index=d.get("stream_index"),
            stream_count=d.get("stream_count"),
            format_id=d.get("format_id"),
            stream_kind=d.get("stream_kind"),
            stream_downloaded_bytes=d.get("stream_downloaded_bytes"),
            stream_total_bytes=d.get("stream_total_bytes"),
            fragment_retries=d.get("fragment_retries"),
        )
        self._loop.call_soon_threadsafe(self._pump.offer, (report, self._now()))

    async def _step(self, report: dict[str, Any]) -> None:
        async with self._order:
            await self._pump.flush()
            await self._send_step(report)

    async def close(self) -> None:
        """Publish what is still pending: the steps reported, then the last progress report."""
        for step in self._steps:
            try:
                await asyncio.wrap_future(step)
            except Exception as exc:  # advisory, like progress: the download's outcome is what counts
                log.warning("post-processing step not reported: %s", exc)
        await self._pump.close()


def _pp_percent(d: dict[str, Any]) -> float | None:
    seconds, total = d.get("pp_seconds"), d.get("pp_total_seconds")
    return 100.0 * seconds / total if seconds is not None and total else None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
