"""Downloader handlers: resolve a requested URL into items, and download one item. Plain async functions; the
service's ``main`` gives them their dependencies (the media tool: yt-dlp in slot processes, see ``slots``)."""

from __future__ import annotations

import asyncio
import logging
import random
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Awaitable, Callable

from contracts import events as ev
from contracts.ids import item_id, random_event_id, step_event_id
from contracts.items import download_format, wants_audio
from contracts.options import DownloadOptions
from services.downloader.catalog import MediaCatalog
from services.downloader.deletion import adopt
from services.downloader.disk import DiskLimits
from services.downloader.probes import ProbeCarrier
from services.downloader.reports import ItemReports
from services.downloader.schedule import ScheduleGate, Transfer
from services.downloader.sites import current_turn
from services.engine.media import Downloaded, MediaTool, PlaylistPlace, ProgressHook, Resolution
from services.runtime.cancellation import Aborted, Cancellations, CancelToken, until_tripped
from services.runtime.clock import utcnow
from services.runtime.cookies import CookieStore
from services.runtime.cooldown import Cooldowns
from services.runtime.failures import MediaError
from services.runtime.metrics import DOWNLOADED_BYTES, REUSED
from services.runtime.nats import Publisher
from services.runtime.nats.work import RetryLater
from services.runtime.steps import Emitter, run_cancellable
from services.runtime.throttle import HandoffGate, ProgressPump

log = logging.getLogger("tubeflow.downloader")

# Failures whose partial files stay for a retry to resume from (they count against the job's byte budget, and the
# retention sweep removes them with the job's media).
RESUMABLE = frozenset({"fragment_missing", "merge_failed"})
PAUSED_MESSAGE = "the queue was paused: the item goes on from its partial file when the queue is resumed"
# Items are announced this many at a time: each is its own small event, published concurrently.
QUEUE_CHUNK = 64
# Resolves of sites cooling down that wait in one process (more come back when the cool-down is due to end), and
# how often they look whether it is over (it may be ended on request).
MAX_PARKED_RESOLVES = 4
COOLDOWN_LOOK = 5.0


@dataclass
class Downloader:
    publisher: Publisher
    media: MediaTool
    executor: Executor
    media_dir: Path
    worker: str
    max_items: int = 1000
    progress_interval: float = 0.25
    progress_min_step: float = 1.0
    attempts: int = 3
    retry_delay: float = 2.0
    cancellations: Cancellations = field(default_factory=Cancellations)
    catalog: MediaCatalog | None = None
    now: Callable[[], datetime] = field(default=utcnow)
    disk: DiskLimits = field(default_factory=DiskLimits)
    cookies: CookieStore | None = None
    # What a resolve found, carried to the downloader that takes the item (see probes); None: not carried.
    probes: ProbeCarrier | None = None
    # Issue a single video's ticket right after its `item.queued` (the dispatcher's `dispatch`); None: only the
    # `item.queued` consumer does.
    ticket_now: Callable[[ev.ItemQueuedEvent], Awaitable[None]] | None = None
    # Sites cooling down after they pushed back (TUBEFLOW_SITE_COOLDOWN); None: no cool-downs.
    cooldowns: Cooldowns | None = None
    # The download schedule (issue 29): this process's running downloads under its budget and caps; None: none.
    schedule: ScheduleGate | None = None

    # Resolves running at once (the resolve consumer takes more messages: those waiting for a cool-down).
    resolve_concurrency: int = 2

    def __post_init__(self) -> None:
        self._emit = Emitter(self.publisher, self.now).emit
        self._resolving = asyncio.Semaphore(self.resolve_concurrency)
        self._parked_resolves = 0

    def _cookie_file(self, options: DownloadOptions | None) -> Path | None:
        """The file of the cookie profile the job names (read at download time: a profile replaced meanwhile counts);
        cookies_unknown when it is gone."""
        name = options.cookies if options is not None else None
        if not name:
            return None
        owner = options.cookies_owner if options is not None else None
        if self.cookies is None or not self.cookies.exists(name, owner):
            raise MediaError("cookies_unknown", f"the job's cookie profile {name!r} does not exist (any more)")
        return self.cookies.path(name, owner)

    def _retry_delay(self, attempt: int, exc: MediaError | None = None) -> float:
        """Doubling from TUBEFLOW_RETRY_DELAY; a site that rate-limits us asks for longer (RATE_LIMITED_DELAY)."""
        delay = self.retry_delay * (2 ** (attempt - 1))
        return max(delay, exc.retry_after * attempt) if exc is not None and exc.retry_after else delay

    async def announce_waiting(
        self, event: ev.ItemQueuedEvent, code: str, message: str, until: datetime | None = None
    ) -> None:
        """`download.waiting`: the item can't start yet for a reason outside it (e.g. its site's limit), until a
        known time (``until``) or a change."""
        await self._emit(
            "download.waiting",
            event.job_id,
            ev.DownloadWaiting(worker=self.worker, code=code, message=message, until=until),
            random_event_id(),
            event.item_id,
        )

    # --- resolve ------------------------------------------------------------------------------------------------

    async def resolve(self, event: ev.RequestedEvent, attempt: int = 1) -> None:
        """`requested` -> `resolve.started`, then `resolved` and one `item.queued` per item, or `resolve.failed`.
        A cancel stops a resolve where it is (its slot process is killed if need be)."""
        await run_cancellable(
            self.cancellations,
            event.job_id,
            lambda token: self._resolve(event, attempt, token),
            what="resolve",
            kind="resolve",
        )

    async def _resolve(self, event: ev.RequestedEvent, attempt: int, token: CancelToken) -> None:
        await self._wait_for_cooldown(event.job_id, event.data.url, token)
        async with self._resolving:
            await self._resolve_now(event, token, attempt)

    async def _wait_for_cooldown(self, job: str, url: str, token: CancelToken) -> None:
        """No request goes to a site cooling down: its resolve waits here (without one of the resolve slots, so other
        sites' resolves go on) until the cool-down is over or ended on request. Past MAX_PARKED_RESOLVES waiting in
        this process, the resolve comes back when the cool-down is due to end (one delivery)."""
        cooling = self.cooldowns.cooling(url) if self.cooldowns is not None else None
        if cooling is None:
            return
        if self._parked_resolves >= MAX_PARKED_RESOLVES:
            left = max((cooling.until - self.now()).total_seconds(), 0.0)
            raise RetryLater(left + random.uniform(0.1, 1.0), f"{cooling.site} cools down ({cooling.code})")
        log.info("job %s: resolve waits: %s cools down until %s", job, cooling.site, cooling.until)
        self._parked_resolves += 1
        try:
            while cooling is not None:
                left = (cooling.until - self.now()).total_seconds()
                await until_tripped(token, asyncio.sleep(min(max(left, 0.01), COOLDOWN_LOOK)))
                cooling = self.cooldowns.cooling(url) if self.cooldowns is not None else None
        finally:
            self._parked_resolves -= 1

    async def _resolve_now(self, event: ev.RequestedEvent, token: CancelToken, attempt: int) -> None:
        job = event.job_id
        request = event.data
        rnd = request.round
        await self._emit(
            "resolve.started",
            job,
            ev.ResolveStarted(worker=self.worker),
            step_event_id(job, "resolve.started", round=rnd),
        )
        loop = asyncio.get_running_loop()
        try:
            resolution = await loop.run_in_executor(
                self.executor,
                lambda: self.media.resolve(
                    request.url,
                    max_items=self.max_items,
                    items=request.playlist_items,
                    token=token,
                    cookies=self._cookie_file(request.options),
                    impersonate=request.options.impersonate if request.options is not None else None,
                ),
            )
        except MediaError as exc:
            if token.reason is not None:
                raise Aborted(token.reason) from exc
            delay = await self._retry_after(exc, attempt, request.url)
            if delay is not None:
                raise RetryLater(delay, f"{exc.code}: {exc.message}") from exc
            log.warning("job %s: resolve of %s failed: %s: %s", job, request.url[:200], exc.code, exc.message[:300])
            await self._emit(
                "resolve.failed",
                job,
                ev.ResolveFailed(code=exc.code, message=exc.message, worker=self.worker),
                step_event_id(job, "resolve.failed", round=rnd),
            )
            return
        if token.reason is not None:
            raise Aborted(token.reason)
        await self._emit(
            "resolved",
            job,
            ev.Resolved(
                kind=resolution.kind,  # type: ignore[arg-type]
                title=resolution.title,
                item_count=len(resolution.entries),
                truncated=resolution.truncated,
                worker=self.worker,
            ),
            step_event_id(job, "resolved", round=rnd),
        )
        self._carry_probe(event, resolution)
        await self._queue_items(event, resolution)

    def _carry_probe(self, event: ev.RequestedEvent, resolution: Resolution) -> None:
        """A single video's probe, for whichever downloader takes its item (not one extracted with cookies)."""
        kept = getattr(self.media, "kept_probe", None)
        options = event.data.options
        if self.probes is None or kept is None or resolution.kind != "video" or not resolution.entries:
            return
        if options is not None and options.cookies:
            return
        entry = resolution.entries[0]
        self.probes.carry(event.job_id, item_id(entry.index), kept(entry.url))

    async def _queue_items(self, event: ev.RequestedEvent, resolution: Resolution) -> None:
        """One `item.queued` per entry, ``QUEUE_CHUNK`` at a time; a cancel stops it between chunks. A single video's
        ticket is issued here at once (``ticket_now``), not after the `item.queued` consumer's hop; that consumer
        issues the same ticket again, which the server drops as a duplicate."""
        job, request = event.job_id, event.data
        options = request.options
        if options is not None and resolution.kind == "playlist":
            options = options.for_show(None, resolution.images)  # a show of a playlist: its own images
        chunk: list[ev.ItemQueuedEvent] = []
        for start in range(0, len(resolution.entries), QUEUE_CHUNK):
            if await self.cancellations.is_cancelled(job):
                return
            chunk = [
                ev.item_queued(
                    job,
                    item_id(entry.index),
                    index=entry.index,
                    url=entry.url,
                    title=entry.title,
                    mode=request.mode,
                    audio_format=request.audio_format,
                    format=request.format,
                    round=request.round,
                    occurred_at=self.now(),
                    options=options,
                    playlist_title=resolution.title if resolution.kind == "playlist" else None,
                    priority=request.priority,
                    held=not request.start,
                )
                for entry in resolution.entries[start : start + QUEUE_CHUNK]
            ]
            await asyncio.gather(*(self.publisher.publish(queued) for queued in chunk))
        if self.ticket_now is not None and resolution.kind == "video" and len(chunk) == 1:
            try:
                await self.ticket_now(chunk[0])
            except Exception as exc:  # the `item.queued` consumer issues it
                log.debug("ticket of job %s not issued at once: %s", job, exc)

    # --- download -----------------------------------------------------------------------------------------------

    async def download(self, event: ev.ItemQueuedEvent, attempt: int = 1) -> None:
        """`item.queued` -> `download.started`, throttled `download.progress`, then `download.completed|failed`
        (or `download.retrying` and a redelivery after a transient failure)."""
        job, item = event.job_id, event.item_id or item_id(event.data.index)
        await run_cancellable(
            self.cancellations,
            job,
            lambda token: self._download(event, job, item, attempt, token),
            what=f"download of item {item}",
            on_cancelled=lambda: _remove_partials(self.media_dir / job, item),
            kind="download",
            on_paused=lambda reason: self._said_paused(job, item, reason),
        )

    async def _said_paused(self, job: str, item: str, reason: str) -> None:
        """`download.waiting` for a download the queue's pause or the schedule stopped (its partial file stays)."""
        stopped = self.schedule.stopped(f"{job}/{item}") if self.schedule is not None and reason == "schedule" else None
        code, message, until = stopped if stopped is not None else ("queue_paused", PAUSED_MESSAGE, None)
        await self._emit(
            "download.waiting",
            job,
            ev.DownloadWaiting(worker=self.worker, code=code, message=message, until=until),
            random_event_id(),
            item,
        )

    async def _download(self, event: ev.ItemQueuedEvent, job: str, item: str, attempt: int, token: CancelToken) -> None:
        rnd = event.data.round
        await self._wait_for_disk(job, item, attempt, rnd, token)
        try:
            max_bytes = await self.disk.item_budget(job)
        except MediaError as exc:
            await self._fail_or_retry(exc, job, item, attempt, rnd)
            return
        await self._emit(
            "download.started",
            job,
            ev.DownloadStarted(worker=self.worker, attempt=attempt),
            step_event_id(job, "download.started", item, attempt, round=rnd),
            item,
        )
        transfer = self.schedule.begin(event, token) if self.schedule is not None else None
        try:
            result = await self._fetch_reported(event, job, item, attempt, token, max_bytes, transfer)
        finally:
            if transfer is not None and self.schedule is not None:
                self.schedule.end(transfer)
        if result is None:
            return
        # A live recording that was stopped completes with what it recorded, whatever stopped it.
        await self._completed(event, job, item, result)
        if self.cooldowns is not None and not result.reused:
            await self.cooldowns.succeeded(event.data.url)

    async def _fetch_reported(
        self,
        event: ev.ItemQueuedEvent,
        job: str,
        item: str,
        attempt: int,
        token: CancelToken,
        max_bytes: int | None,
        transfer: Transfer | None,
    ) -> Downloaded | None:
        """The download with its progress reported; None when it failed (said) or was skipped (said)."""
        rnd = event.data.round
        reports = self._progress_reports(job, item, token, transfer)
        try:
            result = await self._fetch(event, job, item, reports.hook, token, max_bytes, transfer)
        except MediaError as exc:
            await reports.close()
            if token.reason is not None:
                raise Aborted(token.reason) from exc
            await self._fail_or_retry(exc, job, item, attempt, rnd, event.data.url)
            return None
        except BaseException:
            await reports.close()
            raise
        await reports.close()
        if token.reason is not None and not result.stopped_early:
            raise Aborted(token.reason)
        if _skips(event, result):
            existing = result.path.relative_to(self.media_dir).as_posix()
            if self.catalog is not None:
                await self.catalog.note_skip(existing, job, item)
            await self._emit(
                "item.skipped",
                job,
                ev.ItemSkipped(
                    worker=self.worker,
                    message="an earlier job downloaded this already (skip_downloaded)",
                    existing=existing,
                ),
                step_event_id(job, "item.skipped", item, round=rnd),
                item,
            )
            return None
        return result

    def _progress_reports(
        self, job: str, item: str, token: CancelToken, transfer: Transfer | None = None
    ) -> "ItemReports":
        """The yt-dlp hook for this item, and what publishes what it reports: throttled `download.progress`, and
        `postprocess.*` in order after the progress before them."""

        async def send_progress(observed: tuple[ev.DownloadProgress, datetime]) -> None:
            # occurred_at is when the hook saw the bytes, not when the throttle let the report go.
            report, when = observed
            await self._emit("download.progress", job, report, random_event_id(), item, occurred_at=when)

        async def send_step(report: dict[str, Any]) -> None:
            event_type, data = _postprocess_event(report, self.worker)
            await self._emit(event_type, job, data, random_event_id(), item)

        pump: ProgressPump[tuple[ev.DownloadProgress, datetime]] = ProgressPump(
            send_progress,
            lambda observed: _download_percent(observed[0]),
            interval=self.progress_interval,
            min_step=self.progress_min_step,
        ).start()
        return ItemReports(
            pump,
            send_step,
            token,
            self.worker,
            self.now,
            HandoffGate(self.progress_interval, self.progress_min_step),
            # ffmpeg's progress has no pump after it: at most one report per interval, or per min_step moved.
            HandoffGate(4 * self.progress_interval, self.progress_min_step),
            began=turn.began if (turn := current_turn.get()) is not None else None,
            transfer=transfer,
        )

    async def _wait_for_disk(self, job: str, item: str, attempt: int, rnd: int, token: CancelToken) -> None:
        """Under TUBEFLOW_MIN_FREE_DISK the item waits (`download.waiting`, code `disk_low`, once) until there is
        room, holding its message; a cancel or shutdown ends the wait."""
        reason = self.disk.disk_low(self.media_dir)
        if reason is None:
            return
        log.warning("item %s of job %s waits: %s", item, job, reason)
        await self._emit(
            "download.waiting",
            job,
            ev.DownloadWaiting(worker=self.worker, code="disk_low", message=reason),
            step_event_id(job, "download.waiting", item, attempt, round=rnd),
            item,
        )
        while self.disk.disk_low(self.media_dir) is not None:
            await until_tripped(token, asyncio.sleep(self.disk.check_every))

    async def _fetch(
        self,
        event: ev.ItemQueuedEvent,
        job: str,
        item: str,
        hook: ProgressHook,
        token: CancelToken,
        max_bytes: int | None = None,
        transfer: Transfer | None = None,
    ) -> Downloaded:
        """Download the item with yt-dlp on a worker thread, reusing a file the catalog has (or claiming its key
        while this download runs, so a concurrent job waits for it instead of downloading it too). Under the
        schedule's budget (``transfer``) the download's rate is asked for as it runs."""
        loop = asyncio.get_running_loop()
        cookies = self._cookie_file(event.data.options)
        directory = self.media_dir / job
        directory.mkdir(parents=True, exist_ok=True)
        claimed: list[str] = []
        reuse = self.catalog.reuse_or_claim(loop, claimed, token.raise_if_tripped) if self.catalog else None
        probe = None
        kept = getattr(self.media, "kept_probe", None)
        if self.probes is not None and cookies is None and kept is not None and kept(event.data.url) is None:
            probe = await self.probes.fetch(job, item)
        try:
            result = await loop.run_in_executor(
                self.executor,
                lambda: self.media.download(
                    event.data.url,
                    directory=directory,
                    stem=item,
                    format=download_format(event.data),
                    hook=hook,
                    reuse=reuse,
                    token=token,
                    max_bytes=max_bytes,
                    options=event.data.options,
                    playlist=PlaylistPlace(event.data.playlist_title, event.data.index)
                    if event.data.playlist_title is not None
                    else None,
                    cookies=cookies,
                    **({"probe": probe} if probe is not None else {}),
                    **(self._paced(transfer) if transfer is not None and transfer.held else {}),
                ),
            )
            if claimed and self.catalog is not None:
                await self.catalog.record(claimed[0], result)
            return result if _skips(event, result) else adopt(result, directory)
        finally:
            if claimed and self.catalog is not None:
                await self.catalog.release(claimed[0])

    def _paced(self, transfer: Transfer) -> dict[str, Any]:
        """The download's share of the schedule's budget, asked while it runs; small blocks under a schedule."""
        schedule = self.schedule
        assert schedule is not None
        return {"rate": lambda: schedule.rate(transfer), "paced": schedule.in_force()}

    async def _retry_after(self, exc: MediaError, attempt: int, url: str | None) -> float | None:
        """Seconds until a failed try is tried again (None: it is not). A site that pushed back (429, a bot check, a
        burst of 403s) cools down, and what it refused is tried again when the cool-down is over."""
        cooling = await self.cooldowns.strike(url, exc.code, exc.message) if self.cooldowns and url else None
        if attempt >= self.attempts or not (exc.transient or cooling is not None):
            return None
        if cooling is not None:
            # Back soon, to wait for the cool-down's end at the site gate (or at the resolve): it may be ended early.
            return min(max((cooling.until - self.now()).total_seconds(), 0.0), COOLDOWN_LOOK) + random.uniform(0.1, 1)
        return self._retry_delay(attempt, exc)

    async def _fail_or_retry(
        self, exc: MediaError, job: str, item: str, attempt: int, rnd: int, url: str | None = None
    ) -> None:
        """A transient error with tries left: `download.retrying` and a redelivery later; otherwise `download.failed`.
        A failed post-processing step is named first (`postprocess.failed`); the downloaded streams stay for a retry."""
        if exc.step:
            await self._emit(
                "postprocess.failed",
                job,
                ev.PostprocessFailed(worker=self.worker, name=exc.step[:100], code=exc.code, message=exc.message),
                step_event_id(job, "postprocess.failed", item, attempt, round=rnd),
                item,
            )
        delay = await self._retry_after(exc, attempt, url)
        if delay is not None:
            log.info("job %s item %s: %s (%s), retrying in %.0f s", job, item, exc.code, exc.message[:200], delay)
            await self._emit(
                "download.retrying",
                job,
                ev.DownloadRetrying(
                    worker=self.worker, attempt=attempt, code=exc.code, message=exc.message, delay=delay
                ),
                step_event_id(job, "download.retrying", item, attempt, round=rnd),
                item,
            )
            raise RetryLater(delay, f"{exc.code}: {exc.message}") from exc
        # A permanent failure leaves no partial files behind, unless a retry can resume from them: a stream that
        # lacks a fragment (the server may have it later) and the complete streams of a failed merge.
        if exc.code not in RESUMABLE:
            _remove_partials(self.media_dir / job, item)
        log.warning("job %s item %s: download failed: %s: %s", job, item, exc.code, exc.message[:300])
        await self._emit(
            "download.failed",
            job,
            ev.DownloadFailed(worker=self.worker, code=exc.code, message=exc.message, attempt=attempt),
            step_event_id(job, "download.failed", item, round=rnd),
            item,
        )

    async def _completed(self, event: ev.ItemQueuedEvent, job: str, item: str, result: Downloaded) -> None:
        if result.reused:
            REUSED.inc()
        else:
            DOWNLOADED_BYTES.inc(result.size)
        await self._emit(
            "download.completed",
            job,
            ev.DownloadCompleted(
                worker=self.worker,
                file=result.path.relative_to(self.media_dir).as_posix(),
                size=result.size,
                files=[path.relative_to(self.media_dir).as_posix() for path in result.files],
                chosen=ev.ChosenFormat(**result.chosen) if result.chosen else None,
                title=result.title,
                duration=result.duration,
                audio_format=event.data.audio_format
                if wants_audio(event.data.mode) and not result.stopped_early
                else None,
                round=event.data.round,
                reused=result.reused,
                stopped_early=result.stopped_early,
                audio_only=event.data.mode == "audio" and not result.stopped_early,
                engine=result.engine,
            ),
            step_event_id(job, "download.completed", item, round=event.data.round),
            item,
        )


def _postprocess_event(report: dict[str, Any], worker: str) -> tuple[str, ev.Payload]:
    """A post-processing report from yt-dlp's thread (see services/engine/media.py) as the event that tells it."""
    name = str(report.get("postprocessor"))[:100]
    place = {"step": report.get("pp_step"), "steps": report.get("pp_steps")}
    if report["status"] == "postprocessing":
        return "postprocess.progress", ev.PostprocessProgress(
            worker=worker,
            name=name,
            seconds=report.get("pp_seconds"),
            total_seconds=report.get("pp_total_seconds"),
            bytes=report.get("pp_bytes"),
            speed=report.get("pp_speed"),
            **place,
        )
    if report.get("pp_status") == "started":
        return "postprocess.started", ev.PostprocessStarted(worker=worker, name=name, **place)
    return "postprocess.completed", ev.PostprocessCompleted(worker=worker, name=name)


def _skips(event: ev.ItemQueuedEvent, result: Downloaded) -> bool:
    """``skip_downloaded`` asked, and the catalog had the media from an earlier job."""
    options = event.data.options
    return bool(options is not None and options.skip_downloaded and result.reused)


def _remove_partials(directory: Path, stem: str) -> None:
    for path in directory.glob(f"{stem}-*"):
        if path.name.endswith((".part", ".ytdl")) or ".part-Frag" in path.name or ".temp." in path.name:
            path.unlink(missing_ok=True)


def _download_percent(report: ev.DownloadProgress) -> float | None:
    if report.total_bytes:
        return 100.0 * report.downloaded_bytes / report.total_bytes
    if report.fragment_count:
        return 100.0 * (report.fragment_index or 0) / report.fragment_count
    return None
