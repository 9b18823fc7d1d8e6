"""The wire: one versioned envelope, one payload model per event type, and the subjects they travel on.

Every event is a fact in the past tense, published to ``tubeflow.job.<job_id>.<type>``. Old events stay readable
forever: a schema change bumps ``version`` and registers an upcaster in ``UPCASTERS`` that runs before validation.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Callable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from contracts.bounds import Instant
from contracts.ids import step_event_id
from contracts.options import DownloadOptions
from contracts.payloads import (  # noqa: F401 - re-exported: the wire's names, as they always were
    PRIORITIES,
    AudioFormat,
    CancelRequested,
    ChosenFormat,
    DownloadCompleted,
    DownloadFailed,
    DownloadProgress,
    DownloadRetrying,
    DownloadStarted,
    DownloadWaiting,
    ErrorInfo,
    ExistingDeleted,
    ExtractCompleted,
    ExtractFailed,
    ExtractProgress,
    ExtractStarted,
    ItemQueued,
    ItemSkipped,
    JobDeleted,
    Mode,
    Payload,
    PostprocessCompleted,
    PostprocessFailed,
    PostprocessProgress,
    PostprocessStarted,
    Priority,
    PriorityChanged,
    Requested,
    Resolved,
    ResolveFailed,
    ResolveStarted,
    RetryRequested,
    StartRequested,
    StreamKind,
    WaitingInfo,
)
from contracts.subjects import ALL_EVENTS, SUBJECT_PREFIX, job_filter, job_id_of, subject, subject_filter
from contracts.text import MESSAGE_MAX, SHORT_MAX, TITLE_MAX, TRUNCATED, Message, Short, Title

__all__ = [  # re-exported: the wire's names, as they always were
    "ALL_EVENTS", "MESSAGE_MAX", "SHORT_MAX", "SUBJECT_PREFIX", "TITLE_MAX", "TRUNCATED", "Message", "Short", "Title",
    "job_filter", "job_id_of", "subject", "subject_filter",
]  # fmt: skip

# --- envelope -------------------------------------------------------------------------------------------------


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str
    type: str
    version: int = 1
    job_id: str
    item_id: str | None = None
    occurred_at: Instant
    # Who caused it (issue 28): the user a command came from (its `requested`, cancel, retry, delete…); absent on the
    # work's own events, which the services report (their `worker`).
    actor: Short | None = None
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


class PostprocessProgressEvent(Envelope):
    type: Literal["postprocess.progress"]
    data: PostprocessProgress


class PostprocessCompletedEvent(Envelope):
    type: Literal["postprocess.completed"]
    data: PostprocessCompleted


class PostprocessFailedEvent(Envelope):
    type: Literal["postprocess.failed"]
    data: PostprocessFailed


class ItemSkippedEvent(Envelope):
    type: Literal["item.skipped"]
    data: ItemSkipped


class ExistingDeletedEvent(Envelope):
    type: Literal["item.existing_deleted"]
    data: ExistingDeleted


class StartRequestedEvent(Envelope):
    type: Literal["start.requested"]
    data: StartRequested


class PriorityChangedEvent(Envelope):
    type: Literal["priority.changed"]
    data: PriorityChanged


class JobDeletedEvent(Envelope):
    type: Literal["job.deleted"]
    data: JobDeleted


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
        PostprocessProgressEvent,
        PostprocessCompletedEvent,
        PostprocessFailedEvent,
        ExtractStartedEvent,
        ExtractProgressEvent,
        ExtractCompletedEvent,
        ExtractFailedEvent,
        CancelRequestedEvent,
        RetryRequestedEvent,
        ItemSkippedEvent,
        ExistingDeletedEvent,
        StartRequestedEvent,
        PriorityChangedEvent,
        JobDeletedEvent,
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
    priority: Priority = "normal",
    held: bool = False,
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
            priority=priority,
            held=held,
        ),
        occurred_at=occurred_at,
        event_id=step_event_id(job_id, "item.queued", item, round=round),
    )


def encode_event(event: Envelope) -> bytes:
    # No `"actor": null` on the many events the services report (progress above all).
    return event.model_dump_json(exclude=None if event.actor else {"actor"}).encode()
