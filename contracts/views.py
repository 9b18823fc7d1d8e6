"""Read models: what a job looks like to a reader. Produced only by the fold in ``contracts.fold``."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, PrivateAttr

from contracts.events import AudioFormat, ChosenFormat, ErrorInfo, Mode, Priority, WaitingInfo
from contracts.options import DownloadOptions

# `held`: resolved, its items waiting for `POST /api/jobs/{id}/start` (the job was created with `start: false`).
JobStatus = Literal["queued", "resolving", "held", "running", "completed", "partial", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "partial", "failed", "cancelled"})
# The error code of a job whose view grew past what one message holds: the projector cut it and stopped the job.
VIEW_TOO_LARGE = "view_too_large"

ItemStatus = Literal[
    "queued", "downloading", "recording", "stopping", "processing", "extracting", "completed", "failed", "skipped"
]
StepStatus = Literal["none", "queued", "running", "completed", "failed", "skipped"]
AggregateStatus = Literal["none", "queued", "running", "completed", "partial", "failed"]
Stage = Literal["queued", "resolving", "downloading", "recording", "extracting", "done"]


class View(BaseModel):
    model_config = ConfigDict(frozen=True)


class ItemDownload(View):
    status: StepStatus = "queued"
    # Over all of the item's streams; never decreases within a run, 100 only once the last stream is on disk. None
    # while a live stream is recorded (it has no end to measure against).
    percent: float | None = 0.0
    downloaded_bytes: int = 0
    total_bytes: int | None = None
    speed: float | None = None
    eta: float | None = None
    file: str | None = None
    size: int | None = None
    reused: bool = False
    # The stream running now (1-based) of how many, e.g. "video 1/2" then "audio 2/2"; null for one stream.
    stream_index: int | None = None
    stream_count: int | None = None
    stream_kind: str | None = None
    format_id: str | None = None
    # Fragments fetched again after an error in this attempt.
    fragment_retries: int = 0
    # A live stream: seconds recorded so far, and whether the recording was stopped before the stream ended.
    recorded_seconds: float | None = None
    stopped_early: bool = False
    # The other files the download made (subtitles, thumbnail, chapters), and what yt-dlp picked.
    files: list[str] = []
    chosen: ChosenFormat | None = None
    # Skipped (`skip_downloaded`) because an earlier job has the media: that job's file; true once that job was
    # deleted with its files (`item.existing_deleted`).
    existing: str | None = None
    existing_deleted: bool = False


class ItemPostprocess(View):
    """yt-dlp's post-processors on the downloaded streams (the merge of video and audio, fixups, metadata, …)."""

    status: StepStatus = "none"
    # The one running now, or the last one that ran, and what it does in words ("merging video and audio").
    name: str | None = None
    label: str | None = None
    # How many have finished.
    completed: int = 0
    # The running one's ffmpeg: percent of its media written (None while not known), seconds of it, its length,
    # speed as a multiple of real time; ``step`` of ``steps`` planned after the download.
    percent: float | None = None
    seconds: float | None = None
    total_seconds: float | None = None
    speed: float | None = None
    step: int | None = None
    steps: int | None = None
    # All of the item's post-processing after its download, 0..100: never lower than before in a run.
    overall: float = 0.0


class ItemExtract(View):
    status: StepStatus = "none"
    percent: float = 0.0
    file: str | None = None
    size: int | None = None
    reused: bool = False


class ItemView(View):
    id: str
    index: int
    title: str | None = None
    url: str
    status: ItemStatus = "queued"
    attempts: int = 0
    error: ErrorInfo | None = None
    # Why a queued item is not starting yet (e.g. `disk_low`); cleared when it starts.
    waiting: WaitingInfo | None = None
    worker: str | None = None
    download: ItemDownload = ItemDownload()
    postprocess: ItemPostprocess = ItemPostprocess()
    extract: ItemExtract = ItemExtract()
    # Stream sequence of the last event that changed this item.
    seq: int = 0


class Progress(View):
    percent: float = 0.0
    stage: Stage = "queued"


class DownloadSummary(View):
    status: AggregateStatus = "queued"
    total: int = 0
    completed: int = 0
    failed: int = 0
    skipped: int = 0
    remaining: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    speed: float | None = None
    eta: float | None = None


class ExtractSummary(View):
    status: AggregateStatus = "none"
    total: int = 0
    completed: int = 0
    failed: int = 0
    # Items whose download failed, so there was nothing to extract.
    skipped: int = 0
    remaining: int = 0


class JobSummary(View):
    """A job without its items: what lists and the SSE `job` event carry."""

    id: str
    url: str
    mode: Mode
    audio_format: AudioFormat
    format: str | None = None
    playlist_items: str | None = None
    options: DownloadOptions | None = None
    preset: str | None = None
    status: JobStatus = "queued"
    kind: Literal["video", "playlist"] | None = None
    title: str | None = None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    progress: Progress = Progress()
    download: DownloadSummary = DownloadSummary()
    extract: ExtractSummary = ExtractSummary()
    error: ErrorInfo | None = None
    item_count: int | None = None
    truncated: bool = False
    # How many times `POST /retry` ran the job again.
    retries: int = 0
    priority: Priority = "normal"
    # Created with `start: false` and not started yet (its items wait; the status is `held` once it resolved).
    held: bool = False
    # Who asked for it (issue 28): lists, streams, media and commands show it to them and to admins only.
    owner: str | None = None
    # Set by `job.deleted`: the job is gone from lists and streams; its events stay.
    deleted_at: datetime | None = None
    deleted_files: bool = False
    # The last stream sequence folded into this view.
    seq: int = 0


class JobView(JobSummary):
    items: list[ItemView] = []
    # The fold's cache of sums over `items` (contracts.totals._Cached): never serialized, never compared.
    _derived: Any = PrivateAttr(default=None)

    def summary(self) -> JobSummary:
        return JobSummary.model_construct(**{name: getattr(self, name) for name in JobSummary.model_fields})

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES
