"""The wire: one versioned envelope, one payload model per event type, and the subjects they travel on.

Every event is a fact in the past tense, published to ``tubeflow.job.<job_id>.<type>``. Old events stay readable
forever: a schema change bumps ``version`` and registers an upcaster in ``UPCASTERS`` that runs before validation.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Callable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from contracts.hints import hint_for
from contracts.ids import step_event_id
from contracts.options import DownloadOptions
from contracts.subjects import ALL_EVENTS, SUBJECT_PREFIX, job_filter, job_id_of, subject, subject_filter
from contracts.text import MESSAGE_MAX, SHORT_MAX, TITLE_MAX, TRUNCATED, Message, Short, Title

__all__ = [  # re-exported: the wire's names, as they always were
    "ALL_EVENTS", "MESSAGE_MAX", "SHORT_MAX", "SUBJECT_PREFIX", "TITLE_MAX", "TRUNCATED", "Message", "Short", "Title",
    "job_filter", "job_id_of", "subject", "subject_filter",
]  # fmt: skip

Mode = Literal["video", "audio", "both"]
AudioFormat = Literal["mp3", "m4a", "opus", "flac", "wav"]


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


class DownloadWaiting(Payload):
    """The item can't start yet for a reason outside it (``code`` ``disk_low``: the disk is below
    TUBEFLOW_MIN_FREE_DISK); it starts by itself when that changes."""

    worker: Short
    code: Short
    message: Message


class ChosenFormat(Payload):
    """What yt-dlp picked for an item: its format id(s) and the streams' properties."""

    format_id: Short | None = None
    ext: Short | None = None
    height: int | None = None
    width: int | None = None
    fps: float | None = None
    vcodec: Short | None = None
    acodec: Short | None = None


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


class PostprocessStarted(Payload):
    """yt-dlp began a post-processor on the downloaded streams: ``name`` is its own (Merger, FixupM3u8, Metadata,
    EmbedThumbnail, SponsorBlock, …)."""

    worker: Short
    name: str = Field(max_length=100)


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


# --- envelope -------------------------------------------------------------------------------------------------


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str
    type: str
    version: int = 1
    job_id: str
    item_id: str | None = None
    occurred_at: datetime
    # Stream sequence, filled in when the event is read back from JetStream; never on the wire.
    seq: int = Field(default=0, exclude=True)


class RequestedEvent(Envelope):
    type: Literal["requested"]
    data: Requested


class ResolveStartedEvent(Envelope):
    type: Literal["resolve.started"]
    data: ResolveStarted


class ResolvedEvent(Envelope):
    type: Literal["resolved"]
    data: Resolved


class ResolveFailedEvent(Envelope):
    type: Literal["resolve.failed"]
    data: ResolveFailed


class ItemQueuedEvent(Envelope):
    type: Literal["item.queued"]
    data: ItemQueued


class DownloadStartedEvent(Envelope):
    type: Literal["download.started"]
    data: DownloadStarted


class DownloadProgressEvent(Envelope):
    type: Literal["download.progress"]
    data: DownloadProgress


class DownloadRetryingEvent(Envelope):
    type: Literal["download.retrying"]
    data: DownloadRetrying


class DownloadWaitingEvent(Envelope):
    type: Literal["download.waiting"]
    data: DownloadWaiting


class DownloadCompletedEvent(Envelope):
    type: Literal["download.completed"]
    data: DownloadCompleted


class DownloadFailedEvent(Envelope):
    type: Literal["download.failed"]
    data: DownloadFailed


class ExtractStartedEvent(Envelope):
    type: Literal["extract.started"]
    data: ExtractStarted


class ExtractProgressEvent(Envelope):
    type: Literal["extract.progress"]
    data: ExtractProgress


class ExtractCompletedEvent(Envelope):
    type: Literal["extract.completed"]
    data: ExtractCompleted


class RetryRequestedEvent(Envelope):
    type: Literal["retry.requested"]
    data: RetryRequested


class CancelRequestedEvent(Envelope):
    type: Literal["cancel.requested"]
    data: CancelRequested


class ExtractFailedEvent(Envelope):
    type: Literal["extract.failed"]
    data: ExtractFailed


class PostprocessStartedEvent(Envelope):
    type: Literal["postprocess.started"]
    data: PostprocessStarted


class PostprocessCompletedEvent(Envelope):
    type: Literal["postprocess.completed"]
    data: PostprocessCompleted


class PostprocessFailedEvent(Envelope):
    type: Literal["postprocess.failed"]
    data: PostprocessFailed


EVENT_CLASSES: dict[str, type[Envelope]] = {
    cls.model_fields["type"].annotation.__args__[0]: cls  # type: ignore[union-attr]
    for cls in (
        RequestedEvent,
        ResolveStartedEvent,
        ResolvedEvent,
        ResolveFailedEvent,
        ItemQueuedEvent,
        DownloadStartedEvent,
        DownloadProgressEvent,
        DownloadRetryingEvent,
        DownloadWaitingEvent,
        DownloadCompletedEvent,
        DownloadFailedEvent,
        PostprocessStartedEvent,
        PostprocessCompletedEvent,
        PostprocessFailedEvent,
        ExtractStartedEvent,
        ExtractProgressEvent,
        ExtractCompletedEvent,
        ExtractFailedEvent,
        CancelRequestedEvent,
        RetryRequestedEvent,
    )
}
PAYLOADS: dict[str, type[Payload]] = {t: cls.model_fields["data"].annotation for t, cls in EVENT_CLASSES.items()}  # type: ignore[misc]

Event = Annotated[Union[tuple(EVENT_CLASSES.values())], Field(discriminator="type")]  # type: ignore[valid-type]
_EVENT_ADAPTER: TypeAdapter[Envelope] = TypeAdapter(Event)

# Current schema version of every event type. Bump it together with an upcaster for the old version.
CURRENT_VERSION: dict[str, int] = {t: 1 for t in EVENT_CLASSES}

# (type, version) -> function turning the raw dict of that version into the raw dict of version + 1.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


class InvalidEvent(ValueError):
    """Bytes on an event subject that are not a readable event (bad JSON, unknown type, failed validation)."""


def upcast(raw: dict[str, Any]) -> dict[str, Any]:
    while (key := (raw.get("type"), raw.get("version", 1))) in UPCASTERS:
        raw = UPCASTERS[key](dict(raw))  # type: ignore[index]
    return raw


def parse_event(data: bytes | str | dict[str, Any], seq: int = 0) -> Envelope:
    """Decode one stored event, upcasting old versions first. Raises InvalidEvent with the reason."""
    if isinstance(data, (bytes, str)):
        # Fast path, one pass in pydantic-core: an event of a current version (no upcaster for it) that is valid.
        # Anything else takes the path below, which upcasts and explains what is wrong.
        try:
            event = _EVENT_ADAPTER.validate_json(data)
        except ValueError:
            pass
        else:
            if (event.type, event.version) not in UPCASTERS:
                if seq:
                    # A new object nobody else holds yet: set the stream sequence in place, as model_copy would.
                    object.__setattr__(event, "seq", seq)
                return event
    try:
        raw = json.loads(data) if isinstance(data, (bytes, str)) else dict(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidEvent("an event must be a JSON object")
    raw = upcast(raw)
    if raw.get("type") not in EVENT_CLASSES:
        raise InvalidEvent(f"unknown event type {raw.get('type')!r}")
    try:
        event = _EVENT_ADAPTER.validate_python(raw)
    except ValueError as exc:
        raise InvalidEvent(str(exc)) from exc
    return event.model_copy(update={"seq": seq}) if seq else event


def make_event(
    event_type: str,
    *,
    job_id: str,
    data: Payload | dict[str, Any],
    occurred_at: datetime,
    event_id: str,
    item_id: str | None = None,
) -> Envelope:
    cls = EVENT_CLASSES[event_type]
    return cls(
        event_id=event_id,
        type=event_type,
        version=CURRENT_VERSION[event_type],
        job_id=job_id,
        item_id=item_id,
        occurred_at=occurred_at,
        data=data,
    )


def item_queued(
    job_id: str,
    item: str,
    *,
    index: int,
    url: str,
    title: str | None,
    mode: Mode,
    audio_format: AudioFormat,
    format: str | None,
    round: int,
    occurred_at: datetime,
    options: DownloadOptions | None = None,
    playlist_title: str | None = None,
) -> Envelope:
    """The `item.queued` event of one item of a run: the downloader queues a resolved job's items with it, and the
    API queues the items a retry runs again. Its id is fixed by job, item and round, so a repeat is deduplicated."""
    return make_event(
        "item.queued",
        job_id=job_id,
        item_id=item,
        data=ItemQueued(
            index=index,
            url=url,
            title=title,
            mode=mode,
            audio_format=audio_format,
            format=format,
            round=round,
            options=options,
            playlist_title=playlist_title,
        ),
        occurred_at=occurred_at,
        event_id=step_event_id(job_id, "item.queued", item, round=round),
    )


def encode_event(event: Envelope) -> bytes:
    return event.model_dump_json().encode()
