"""Event payloads: one model per event type's ``data`` (the envelope and the registry are in ``contracts.events``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.bounds import Instant
from contracts.hints import hint_for
from contracts.options import DownloadOptions
from contracts.text import Message, Short, Title

Mode = Literal["video", "audio", "both"]
AudioFormat = Literal["mp3", "m4a", "opus", "flac", "wav"]
# Workers take waiting items of a higher priority first, across all downloader processes.
Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[str, ...] = ("high", "normal", "low")


class Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ErrorInfo(Payload):
    code: Short
    message: Message
    # What to do about it (contracts.hints), filled in from the code.
    hint: str | None = None

    @model_validator(mode="after")
    def _hint(self) -> "ErrorInfo":
        if self.hint is None and (hint := hint_for(self.code)) is not None:
            object.__setattr__(self, "hint", hint)
        return self


# --- payloads -------------------------------------------------------------------------------------------------


class Requested(Payload):
    url: str
    mode: Mode = "video"
    audio_format: AudioFormat = "mp3"
    format: str | None = None
    playlist_items: str | None = None
    # 0 for the job's first run; n when `POST /retry` resolves the job again for the n-th time.
    round: int = 0
    # Quality, subtitles, names and the rest (contracts.options); None: every default.
    options: DownloadOptions | None = None
    # The preset the job named (its fields are already in the ones above: a job replays as it was asked).
    preset: Short | None = None
    # False: the job resolves, but its items wait (status `held`) until `POST /api/jobs/{id}/start`.
    start: bool = True
    priority: Priority = "normal"
    # What the job is called until (and unless) its resolve says: a subscription's entry title from its source (a
    # feed entry's enclosure would otherwise name the job after its file).
    title: Title | None = None
    # Who asked for it (issue 28): a user sees only their own jobs, an admin every one. None: before accounts (an
    # admin's).
    owner: Short | None = None


class ResolveStarted(Payload):
    worker: Short


class Resolved(Payload):
    kind: Literal["video", "playlist"]
    title: Title | None = None
    item_count: int
    truncated: bool = False
    worker: Short


class ResolveFailed(Payload):
    code: Short
    message: Message
    worker: Short


class ItemQueued(Payload):
    """One unit of download work; the downloader consumes these, so items spread over downloader processes."""

    index: int
    url: str
    title: Title | None = None
    mode: Mode
    audio_format: AudioFormat
    format: str | None = None
    round: int = 0
    options: DownloadOptions | None = None
    # The playlist the item is part of (for names like "%(playlist_title)s/%(playlist_index)03d - …").
    playlist_title: Title | None = None
    # The job's priority and hold when the item was queued (`priority.changed` and `start.requested` override them).
    priority: Priority = "normal"
    held: bool = False


class DownloadStarted(Payload):
    worker: Short
    attempt: int = 1


StreamKind = Literal["video", "audio", "av"]


class DownloadProgress(Payload):
    """Bytes of the item so far. When yt-dlp downloads several streams of one item (video and audio apart, merged
    afterwards), ``downloaded_bytes`` and ``total_bytes`` count all of them: the streams already on disk, the one
    running, and (estimated) the ones still to come; ``stream_index`` of ``stream_count`` says which one runs."""

    worker: Short
    downloaded_bytes: int
    total_bytes: int | None = None
    speed: float | None = None
    eta: float | None = None
    fragment_index: int | None = None
    fragment_count: int | None = None
    # The stream running now, 1-based, of how many (absent: one stream, as before these fields existed).
    stream_index: int | None = None
    stream_count: int | None = None
    format_id: str | None = Field(default=None, max_length=200)
    stream_kind: StreamKind | None = None
    # Bytes of the running stream alone, and its size (exact or estimated).
    stream_downloaded_bytes: int | None = None
    stream_total_bytes: int | None = None
    # Fragments fetched again after an error, so far in this attempt (a missing one fails the item: fragment_missing).
    fragment_retries: int | None = None
    # Set while a live stream is recorded: seconds recorded so far (there is no total, so no percent).
    recorded_seconds: float | None = None


class DownloadRetrying(Payload):
    """A transient failure (HTTP 5xx, timeout, reset): the item is tried again after ``delay`` seconds."""

    worker: Short
    attempt: int
    code: Short
    message: Message
    delay: float


class WaitingInfo(ErrorInfo):
    """Why an item waits (a view's ``waiting``), and until when where that is known."""

    until: Instant | None = None


class DownloadWaiting(Payload):
    """The item can't start yet for a reason outside it (``code`` ``disk_low``: the disk is below
    TUBEFLOW_MIN_FREE_DISK); it starts by itself when that changes. ``until``: when it starts, where that is known
    (``site_pacing``)."""

    worker: Short
    code: Short
    message: Message
    until: Instant | None = None


class ChosenFormat(Payload):
    """What yt-dlp picked for an item: its format id(s) and the streams' properties."""

    format_id: Short | None = None
    ext: Short | None = None
    height: int | None = None
    width: int | None = None
    fps: float | None = None
    vcodec: Short | None = None
    acodec: Short | None = None
    # The file's length in seconds and its bitrate in kbit/s. Whatever yt-dlp did not know (a direct file, a video
    # in a page) is measured on the file made (issue 26).
    duration: float | None = Field(default=None, ge=0)
    bitrate: float | None = Field(default=None, ge=0)


class DownloadCompleted(Payload):
    worker: Short
    file: str
    size: int
    # Every other file the download made beside ``file`` (subtitles, thumbnail, chapters), relative to the media root.
    files: list[str] = Field(default=[], max_length=1000)
    chosen: ChosenFormat | None = None
    title: Title | None = None
    duration: float | None = None
    # What the extractor should make of the file; None when the job asked for video only.
    audio_format: AudioFormat | None = None
    round: int = 0
    # True when the file was already there from another job, and nothing was transferred.
    reused: bool = False
    # A live recording stopped before the stream ended (a cancel, a shutdown, the time limit): the file holds what
    # was recorded; no audio is extracted from it.
    stopped_early: bool = False
    # The job asked for the audio alone (mode "audio"): the extractor removes this file once the audio is made.
    audio_only: bool = False
    # The yt-dlp version that downloaded it (an update at run time, issue 27); None when reused.
    engine: Short | None = None


class PostprocessStarted(Payload):
    """yt-dlp began a post-processor on the downloaded streams: ``name`` is its own (Merger, FixupM3u8, Metadata,
    EmbedThumbnail, SponsorBlock, …). ``step`` of ``steps``: its place among the post-processors planned after the
    download (absent for the ones before it, and in events older than these fields)."""

    worker: Short
    name: str = Field(max_length=100)
    step: int | None = Field(default=None, ge=1, le=1000)
    steps: int | None = Field(default=None, ge=1, le=1000)


class PostprocessProgress(Payload):
    """How far the ffmpeg of the running post-processor is: ``seconds`` of media written of ``total_seconds`` (None
    when the length is not known, e.g. a picture), ``bytes`` written, ``speed`` as a multiple of real time."""

    worker: Short
    name: str = Field(max_length=100)
    seconds: float | None = Field(default=None, ge=0)
    total_seconds: float | None = Field(default=None, ge=0)
    bytes: int | None = Field(default=None, ge=0)
    speed: float | None = Field(default=None, ge=0)
    step: int | None = Field(default=None, ge=1, le=1000)
    steps: int | None = Field(default=None, ge=1, le=1000)


class PostprocessCompleted(Payload):
    worker: Short
    name: str = Field(max_length=100)


class PostprocessFailed(Payload):
    worker: Short
    name: str = Field(max_length=100)
    code: Short
    message: Message


class DownloadFailed(Payload):
    worker: Short
    code: Short
    message: Message
    attempt: int = 1


class ExtractStarted(Payload):
    worker: Short
    audio_format: AudioFormat


class ExtractProgress(Payload):
    worker: Short
    percent: float
    out_time: float | None = None


class ExtractCompleted(Payload):
    worker: Short
    file: str
    size: int
    reused: bool = False
    # The download was only the way to the audio (``audio_only``) and is deleted now that the audio is made.
    source_removed: bool = False


class ExtractFailed(Payload):
    worker: Short
    code: Short
    message: Message


class RetryRequested(Payload):
    """`POST /retry` of a finished job: the listed items run again (or, with ``resolve``, the whole job)."""

    round: int
    items: list[str] = []
    resolve: bool = False


class CancelRequested(Payload):
    """Someone asked to stop the job: running work stops, queued items are skipped, the job ends `cancelled`."""

    reason: Short | None = None


class ItemSkipped(Payload):
    """The item was not downloaded: ``skip_downloaded`` was asked and an earlier job has it (``existing``, relative to
    the media root). It counts as done and succeeded; no audio is made for this job."""

    worker: Short
    code: Short = "already_downloaded"
    message: Message
    existing: str | None = None


class ExistingDeleted(Payload):
    """The file a skipped item pointed at (``existing``) was deleted with the job that had it (``by_job``): the item
    is skipped still, but what it stood for is gone (retry the job, without skip_downloaded, to download it)."""

    file: str
    by_job: Short


class StartRequested(Payload):
    """`POST /api/jobs/{id}/start` of a held job: its items are handed to the workers."""


class PriorityChanged(Payload):
    """The job's waiting items are taken before (or after) other jobs' from now on."""

    priority: Priority


class JobDeleted(Payload):
    """The job leaves lists and streams (its events stay: audit and replay keep working); ``files``: its files went
    too. ``reason`` is `requested` or `retention`."""

    files: bool = False
    reason: Short = "requested"
