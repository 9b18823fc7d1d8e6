"""Facts about the installation rather than one job: a site cooling down after it pushed back (issue 27), and what
ended it; the yt-dlp every downloader and scheduler runs, updated or rolled back at run time. Stored as events on ``tubeflow.system.<type>`` (stream TUBEFLOW_SYSTEM), so replay shows when and why the
downloaders held back; what is in force now is in the pacing bucket (``cool.<site>``), which every process watches.
Pure."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from contracts.bounds import Instant
from contracts.schedule import Schedule
from contracts.text import Message, Short

SYSTEM_PREFIX = "tubeflow.system"
ALL_SYSTEM = f"{SYSTEM_PREFIX}.>"
# Why a site cools down: what it answered (error codes, contracts.hints).
COOLING_CODES = ("site_rate_limited", "bot_check", "http_403")


class SiteCooldown(BaseModel):
    """A site no downloader or subscription check sends requests to until ``until``: it answered 429, a bot check or
    a burst of 403s. ``level`` counts the cool-downs in a row (each twice as long as the one before); it starts over
    after ``successes`` reached the reset count once one ended."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    site: Short
    until: Instant
    since: Instant
    code: Short
    message: Message
    level: int = Field(default=1, ge=1)
    successes: int = Field(default=0, ge=0, description="downloads from the site that went well since it ended")
    worker: Short | None = None

    def in_force(self, now: datetime) -> bool:
        return now < self.until


class SiteResumedData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    site: Short
    by: Literal["request", "successes"] = Field(
        description="request: someone asked (resume now); successes: it went well again, the next one starts short"
    )


class EngineUpdatedData(BaseModel):
    """The yt-dlp version every downloader and scheduler switches to at its next idle moment (new slot processes
    run it; items already running finish on the one they started with). The last of these says which one is in
    force; ``previous`` is what a rollback returns to."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: Short
    previous: Short | None = None
    rollback: bool = False
    worker: Short | None = Field(default=None, description="the process that installed and checked it")


class EngineUpdateFailedData(BaseModel):
    """An update that did not happen: the version asked (null: the newest), and why. Nothing changed."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: Short | None = None
    reason: Message
    worker: Short | None = None


class ScheduleChangedData(BaseModel):
    """The download schedule put in force (issue 29; null: none), by whom (a person, or the operator's
    TUBEFLOW_SCHEDULE_FILE). What is in force now is the queue bucket's ``schedule`` key, which every downloader
    watches."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    schedule: Schedule | None = None
    by: Short | None = None


class _SystemEnvelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str
    version: int = 1
    occurred_at: Instant
    seq: int = Field(default=0, exclude=True)


class SiteCooling(_SystemEnvelope):
    type: Literal["site.cooling"]
    data: SiteCooldown


class SiteResumed(_SystemEnvelope):
    type: Literal["site.resumed"]
    data: SiteResumedData


class EngineUpdated(_SystemEnvelope):
    type: Literal["engine.updated"]
    data: EngineUpdatedData


class EngineUpdateFailed(_SystemEnvelope):
    type: Literal["engine.update_failed"]
    data: EngineUpdateFailedData


class ScheduleChanged(_SystemEnvelope):
    type: Literal["schedule.changed"]
    data: ScheduleChangedData


SYSTEM_EVENT_CLASSES = (SiteCooling, SiteResumed, EngineUpdated, EngineUpdateFailed, ScheduleChanged)
SystemEvent = Annotated[Union[SYSTEM_EVENT_CLASSES], Field(discriminator="type")]  # type: ignore[valid-type]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(SystemEvent)


def parse_system_event(data: bytes | str) -> Any:
    return _ADAPTER.validate_json(data)


def system_subject(event_type: str) -> str:
    return f"{SYSTEM_PREFIX}.{event_type}"
