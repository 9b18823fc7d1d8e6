"""What a client may send and get back: the job request with its validation (and the stable error codes of its
messages), the job list page and the stored-event record."""

from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from contracts import events as ev
from contracts.options import OPTION_FIELDS, DownloadOptions
from contracts.presets import MAX_DESCRIPTION
from contracts.subscriptions import JobTemplate
from contracts.validation import code_of, refuse
from contracts.views import JobSummary, JobView
from services.api.format_grammar import FormatError, check_format

MAX_URL_LENGTH = 2048

_refuse = refuse


def error_code(message: str) -> str:
    """The stable error code for a validation message of a JobRequest or a query parameter."""
    known = code_of(message)
    if known is not None:
        return known
    lowered = message.lower()
    if "extra inputs" in lowered:
        return "unknown_field"
    if "field required" in lowered or "missing required" in lowered:
        return "missing"
    if "at most" in lowered:
        return "too_long"
    return "invalid"


class JobOptions(DownloadOptions):
    """What a job may ask for besides its URL, and what a preset may set: the mode, the audio format, the expert's
    format selector, and the download options (contracts.options)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: ev.Mode = Field(default="video", description="video: keep the video; audio: audio file only; both")
    audio_format: ev.AudioFormat = Field(default="mp3", description="format of the extracted audio")
    format: str | None = Field(
        default=None, max_length=256, description="optional yt-dlp format selector, e.g. `best[height<=480]`"
    )
    priority: ev.Priority = Field(default="normal", description="waiting items of higher priority are taken first")
    start: bool | None = Field(
        default=None,
        description="false: resolve the job but hold its downloads (status `held`) until POST /api/jobs/{id}/start; "
        "unset: TUBEFLOW_AUTO_START (default true)",
    )

    def options(self) -> DownloadOptions | None:
        """The download options asked for, or None when all are the defaults."""
        options = DownloadOptions(**{name: getattr(self, name) for name in OPTION_FIELDS})
        return None if options.is_default() else options

    @field_validator("cookies_owner")
    @classmethod
    def _cookies_owner(cls, value: str | None) -> str | None:
        if value is not None:
            raise _refuse("forbidden", "is set by tubeflow from who asks, not by a request")
        return value

    @field_validator("format")
    @classmethod
    def _format(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or any(ord(c) < 32 for c in value)):
            raise _refuse("invalid_format", "must be a non-empty yt-dlp format selector")
        if value is not None and "~=" in value:
            # yt-dlp matches `[field~='regex']` with Python's re, which holds the GIL while it backtracks: one
            # crafted pattern could stop a whole downloader process (a slot process now, killed at its deadline).
            raise _refuse("invalid_format", "regex filters (~=) are not allowed in a format selector")
        if value is not None:
            try:
                check_format(value)
            except FormatError as exc:
                raise _refuse("invalid_format", f"not a yt-dlp format selector: {exc}") from exc
        return value


class PresetRequest(JobOptions):
    """A preset: the job fields it sets (only those given are stored), and a description."""

    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)

    def fields(self) -> dict:
        return self.model_dump(mode="json", exclude_unset=True, exclude={"description"})


class JobRequest(JobOptions):
    """What a client may ask for: a URL, a preset, and the job options (its own fields override the preset's). Only
    these fields exist; anything else is refused."""

    url: str = Field(max_length=MAX_URL_LENGTH, description="http(s) URL of a video or playlist")
    playlist_items: str | None = Field(
        default=None,
        max_length=200,
        description='which playlist entries to take, 1-based: "1-3,7,10-12"',
    )
    preset: str | None = Field(default=None, max_length=64, description="a preset's name (GET /api/presets)")

    def template(self, auto_start: bool) -> JobTemplate:
        """What the job asks for besides its URL; unset `start` is TUBEFLOW_AUTO_START (``auto_start``)."""
        return JobTemplate(
            mode=self.mode,
            audio_format=self.audio_format,
            format=self.format,
            options=self.options(),
            preset=self.preset,
            priority=self.priority,
            start=auto_start if self.start is None else self.start,
        )

    def with_preset(self, fields: dict) -> "JobRequest":
        """This request over a preset's fields: what the client set wins, the preset fills in the rest."""
        return JobRequest.model_validate({**fields, **self.model_dump(exclude_unset=True)})

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


MAX_BATCH = 500
BATCH_MAX_BODY = MAX_BATCH * (MAX_URL_LENGTH + 16) + 64 * 1024


class BatchRequest(JobOptions):
    """Many URLs with the same job fields (`POST /api/jobs/batch`)."""

    urls: list[str] = Field(min_length=1, max_length=MAX_BATCH, description=f"1 to {MAX_BATCH} http(s) URLs")
    playlist_items: str | None = Field(default=None, max_length=200)
    preset: str | None = Field(default=None, max_length=64)


class BatchAccepted(BaseModel):
    jobs: list[JobView]


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
    # Who asked (a command's event: its user); null on the work's own events.
    actor: str | None = None
    data: dict
