"""Extractor handler: a completed download of a job that asked for audio becomes an audio file, step by step."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from contracts import events as ev
from contracts.ids import random_event_id, step_event_id
from services.extractor.ffmpeg import audio_path, extract_audio, made_from, source_identity
from services.runtime.cancellation import Cancellations, until_tripped
from services.runtime.clock import utcnow
from services.runtime.failures import MediaError
from services.runtime.nats import Publisher
from services.runtime.steps import Emitter, run_cancellable
from services.runtime.throttle import ProgressPump

log = logging.getLogger("tubeflow.extractor")


@dataclass
class Extractor:
    publisher: Publisher
    media_dir: Path
    worker: str
    progress_interval: float = 0.25
    progress_min_step: float = 1.0
    cancellations: Cancellations = field(default_factory=Cancellations)
    now: Callable[[], datetime] = field(default=utcnow)
    # Bytes an audio file may take (TUBEFLOW_MAX_FILESIZE; 0: no bound).
    max_filesize: int = 0

    def __post_init__(self) -> None:
        self._emitter = Emitter(self.publisher, self.now)

    async def _emit(
        self, event_type: str, source: ev.Envelope, data: ev.Payload, event_id: str, occurred_at: datetime | None = None
    ) -> None:
        await self._emitter.emit(event_type, source.job_id, data, event_id, source.item_id, occurred_at)

    async def extract(self, event: ev.DownloadCompletedEvent, attempt: int = 1) -> None:
        """`download.completed` of a job that asked for audio -> `extract.started`, throttled `extract.progress`,
        then `extract.completed|failed`."""
        audio_format = event.data.audio_format
        if audio_format is None:
            return
        await run_cancellable(
            self.cancellations,
            event.job_id,
            lambda token: until_tripped(token, self._extract(event, audio_format, attempt)),
            what=f"extraction of item {event.item_id}",
        )

    async def _extract(self, event: ev.DownloadCompletedEvent, audio_format: str, attempt: int) -> None:
        job, item = event.job_id, event.item_id
        await self._emit(
            "extract.started",
            event,
            ev.ExtractStarted(worker=self.worker, audio_format=audio_format),
            step_event_id(job, "extract.started", item, attempt, round=event.data.round),
        )
        pump, on_progress = self._progress_reports(event)
        media_dir = self.media_dir.resolve()
        source = (media_dir / event.data.file).resolve()
        target = audio_path(source, audio_format)
        try:
            target, size, reused = await self._make_audio(event, source, target, audio_format, on_progress)
        except MediaError as exc:
            await pump.close()
            log.warning("job %s item %s: audio extraction failed: %s: %s", job, item, exc.code, exc.message[:300])
            await self._emit(
                "extract.failed",
                event,
                ev.ExtractFailed(worker=self.worker, code=exc.code, message=exc.message),
                step_event_id(job, "extract.failed", item, round=event.data.round),
            )
            return
        except BaseException:
            await pump.close()
            raise
        await pump.close()
        # An audio job's download was only the way to its audio: removed once the audio's completion is told (a
        # crash in between leaves it on disk, never an item without its file).
        remove = event.data.audio_only and source != target and source.is_file()
        await self._emit(
            "extract.completed",
            event,
            ev.ExtractCompleted(
                worker=self.worker,
                file=target.relative_to(media_dir).as_posix(),
                size=size,
                reused=reused,
                source_removed=remove,
            ),
            step_event_id(job, "extract.completed", item, round=event.data.round),
        )
        if remove:
            source.unlink(missing_ok=True)

    def _progress_reports(
        self, event: ev.DownloadCompletedEvent
    ) -> tuple[ProgressPump[tuple[ev.ExtractProgress, datetime]], Callable[[float, float | None], None]]:
        """ffmpeg's progress callback, and the pump that publishes it as throttled `extract.progress`."""

        async def send_progress(observed: tuple[ev.ExtractProgress, datetime]) -> None:
            # occurred_at is when ffmpeg reported, not when the throttle let the report go.
            report, when = observed
            await self._emit("extract.progress", event, report, random_event_id(), occurred_at=when)

        pump: ProgressPump[tuple[ev.ExtractProgress, datetime]] = ProgressPump(
            send_progress,
            lambda observed: observed[0].percent,
            interval=self.progress_interval,
            min_step=self.progress_min_step,
        ).start()
        worker = self.worker

        def on_progress(percent: float, out_time: float | None) -> None:
            report = ev.ExtractProgress(worker=worker, percent=round(percent, 2), out_time=out_time)
            pump.offer((report, self.now()))

        return pump, on_progress

    async def _make_audio(
        self,
        event: ev.DownloadCompletedEvent,
        source: Path,
        target: Path,
        audio_format: str,
        on_progress: Callable[[float, float | None], None],
    ) -> tuple[Path, int, bool]:
        """Write the audio file; returns where, its size and whether an existing one was reused: one made from the
        same download (another job's that reused it, or this item's own before a redelivery). A name taken by any
        other file gets " (2)", " (3)", … as downloads do."""
        media_dir = self.media_dir.resolve()
        if not source.is_relative_to(media_dir):
            raise MediaError("missing_file", f"the downloaded file {event.data.file} is not there")
        if not source.is_file():
            if event.data.audio_only and target.is_file() and target.stat().st_size > 0:
                # A redelivery after the audio was made and its download removed: the audio (written atomically).
                return target, target.stat().st_size, True
            raise MediaError("missing_file", f"the downloaded file {event.data.file} is not there")
        key = source_identity(source)
        for n in range(1, 100):
            candidate = target if n == 1 else target.with_name(f"{target.stem} ({n}){target.suffix}")
            if candidate.exists():
                if candidate.is_file() and candidate.stat().st_size > 0 and made_from(candidate) == key:
                    return candidate, candidate.stat().st_size, True  # written atomically, so complete
                continue
            size = await extract_audio(
                source,
                candidate,
                audio_format,
                duration=event.data.duration,
                on_progress=on_progress,
                max_bytes=self.max_filesize or None,
                source_key=key,
            )
            return candidate, size, False
        raise MediaError("name_taken", f"{target.name} and its next 98 variants are all taken")
