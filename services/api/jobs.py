"""Job requests and the job store the HTTP handlers use: submit (publish `requested`), read views and events."""

from __future__ import annotations

import asyncio
import hashlib
import re
from datetime import datetime
from typing import Callable
from urllib.parse import urlsplit

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from contracts import events as ev
from contracts.fold import apply
from contracts.ids import is_job_id, new_job_id, step_event_id
from contracts.views import JobSummary, JobView
from services.api.hub import JobHub
from services.runtime.clock import utcnow
from services.runtime.eventstore import STREAM, Publisher, StoredEvent, read_job_events

MAX_URL_LENGTH = 2048

# Messages of our own validation errors -> their error codes (Litestar passes on the message, not pydantic's type).
_CODES: dict[str, str] = {}


def _refuse(code: str, message: str) -> PydanticCustomError:
    _CODES[message] = code
    return PydanticCustomError(code, message)


def error_code(message: str) -> str:
    """The stable error code for a validation message of a JobRequest or a query parameter."""
    for known, code in _CODES.items():
        if message.endswith(known):
            return code
    lowered = message.lower()
    if "extra inputs" in lowered:
        return "unknown_field"
    if "field required" in lowered or "missing required" in lowered:
        return "missing"
    if "at most" in lowered:
        return "too_long"
    return "invalid"


class JobRequest(BaseModel):
    """What a client may ask for. Only these fields exist; anything else is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(max_length=MAX_URL_LENGTH, description="http(s) URL of a video or playlist")
    mode: ev.Mode = Field(default="video", description="video: keep the video; audio: audio file only; both")
    audio_format: ev.AudioFormat = Field(default="mp3", description="format of the extracted audio")
    format: str | None = Field(
        default=None, max_length=256, description="optional yt-dlp format selector, e.g. `best[height<=480]`"
    )
    playlist_items: str | None = Field(
        default=None,
        max_length=200,
        description='which playlist entries to take, 1-based: "1-3,7,10-12"',
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip()
        if not value or any(c.isspace() for c in value):
            raise _refuse("invalid_url", "must be a URL without spaces")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise _refuse("invalid_url", "is not a parsable URL") from exc
        if parts.scheme.lower() not in ("http", "https"):
            raise _refuse("invalid_url", "must be an http or https URL")
        if not parts.hostname:
            raise _refuse("invalid_url", "has no host")
        return value

    @field_validator("playlist_items")
    @classmethod
    def _playlist_items(cls, value: str | None) -> str | None:
        return _check_playlist_items(value)

    @field_validator("format")
    @classmethod
    def _format(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or any(ord(c) < 32 for c in value)):
            raise _refuse("invalid_format", "must be a non-empty yt-dlp format selector")
        return value


_PLAYLIST_ITEMS = re.compile(r"\d{1,6}(-\d{1,6})?(,\d{1,6}(-\d{1,6})?)*")


def _check_playlist_items(value: str | None) -> str | None:
    if value is not None and not _PLAYLIST_ITEMS.fullmatch(value.replace(" ", "")):
        raise _refuse("invalid_playlist_items", 'must look like "1-3,7,10-12" (1-based entry numbers and ranges)')
    return value.replace(" ", "") if value is not None else None


class JobList(BaseModel):
    jobs: list[JobSummary]
    next: str | None = Field(description="cursor for the next page (pass as ?cursor=), null on the last page")


class EventRecord(BaseModel):
    seq: int
    type: str
    occurred_at: datetime | None
    item_id: str | None
    data: dict


class JobStore:
    def __init__(
        self,
        js: JetStreamContext,
        kv: KeyValue,
        keys: KeyValue,
        publisher: Publisher,
        hub: JobHub,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self._js = js
        self._kv = kv
        self._keys = keys
        self._publisher = publisher
        self._hub = hub
        self._now = now

    async def submit(self, request: JobRequest, idempotency_key: str | None = None) -> JobView:
        job_id = new_job_id()
        if idempotency_key is not None:
            # The first request with a key claims it; later ones get the job it made.
            key = hashlib.sha256(idempotency_key.encode()).hexdigest()
            try:
                await self._keys.create(key, job_id.encode())
            except KeyWrongLastSequenceError:
                existing = (await self._keys.get(key)).value.decode()
                for _ in range(50):
                    view = await self.get(existing)
                    if view is not None:
                        return view
                    await asyncio.sleep(0.05)  # the first request is still publishing its event
                raise RuntimeError(f"idempotency key points at job {existing}, which never appeared") from None
        event = ev.make_event(
            "requested",
            job_id=job_id,
            data=ev.Requested(
                url=request.url,
                mode=request.mode,
                audio_format=request.audio_format,
                format=request.format,
                playlist_items=request.playlist_items,
            ),
            occurred_at=self._now(),
            event_id=step_event_id(job_id, "requested"),
        )
        ack = await self._publisher.publish(event)
        view = apply(None, event.model_copy(update={"seq": ack.seq}))
        self._hub.accept(view)
        return view

    async def cancel(self, view: JobView) -> JobView:
        event = ev.make_event(
            "cancel.requested",
            job_id=view.id,
            data=ev.CancelRequested(reason="cancelled on request"),
            occurred_at=self._now(),
            event_id=step_event_id(view.id, "cancel.requested"),
        )
        ack = await self._publisher.publish(event)
        return apply(view, event.model_copy(update={"seq": ack.seq}))

    async def retry(self, view: JobView) -> JobView:
        """Run the failed (and skipped) items of a finished job again; a job that never resolved, from the start."""
        rnd = view.retries + 1
        items = [i for i in view.items if i.status in ("failed", "skipped")]
        resolve = not view.items
        retry = ev.make_event(
            "retry.requested",
            job_id=view.id,
            data=ev.RetryRequested(round=rnd, items=[i.id for i in items], resolve=resolve),
            occurred_at=self._now(),
            event_id=step_event_id(view.id, "retry.requested", round=rnd),
        )
        ack = await self._publisher.publish(retry)
        retried = apply(view, retry.model_copy(update={"seq": ack.seq}))
        if resolve:
            again = ev.Requested(
                url=view.url,
                mode=view.mode,
                audio_format=view.audio_format,
                format=view.format,
                playlist_items=view.playlist_items,
                round=rnd,
            )
            await self._publisher.publish(
                ev.make_event(
                    "requested",
                    job_id=view.id,
                    data=again,
                    occurred_at=self._now(),
                    event_id=step_event_id(view.id, "requested", round=rnd),
                )
            )
            return retried
        await asyncio.gather(
            *(
                self._publisher.publish(
                    ev.item_queued(
                        view.id,
                        item.id,
                        index=item.index,
                        url=item.url,
                        title=item.title,
                        mode=view.mode,
                        audio_format=view.audio_format,
                        format=view.format,
                        round=rnd,
                        occurred_at=self._now(),
                    )
                )
                for item in items
            )
        )
        return retried

    async def get_json(self, job_id: str) -> bytes | None:
        """The view as stored: the projector wrote it with JobView's own serializer, so it is sent as it is
        (parsing and re-encoding a 1,000-item view per GET costs tens of milliseconds)."""
        if not is_job_id(job_id):
            return None
        try:
            entry = await self._kv.get(job_id)
            if entry.value:
                return entry.value
        except KeyNotFoundError:
            pass
        view = await self.get(job_id)
        return view.model_dump_json().encode() if view is not None else None

    async def get(self, job_id: str) -> JobView | None:
        if not is_job_id(job_id):
            return None
        try:
            entry = await self._kv.get(job_id)
            if entry.value:
                return JobView.model_validate_json(entry.value)
        except KeyNotFoundError:
            pass
        # Accepted but not folded yet (or the read models are being rebuilt): the `requested` event says enough.
        try:
            raw = await self._js.get_last_msg(STREAM, ev.subject(job_id, "requested"))
        except NotFoundError:
            return None
        try:
            event = ev.parse_event(raw.data, seq=raw.seq)
        except ev.InvalidEvent:
            return None
        return apply(None, event)

    async def events(self, job_id: str, *, after: int, limit: int) -> list[StoredEvent]:
        if not is_job_id(job_id):
            return []
        return await read_job_events(self._js, job_id, after=after, limit=limit)
