"""Facts about the installation rather than one job: a site cooling down after it pushed back (issue 27), and what
ended it. Stored as events on ``tubeflow.system.<type>`` (stream TUBEFLOW_SYSTEM), so replay shows when and why the
downloaders held back; what is in force now is in the pacing bucket (``cool.<site>``), which every process watches.
Pure."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from contracts.bounds import Instant
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


SYSTEM_EVENT_CLASSES = (SiteCooling, SiteResumed)
SystemEvent = Annotated[Union[SYSTEM_EVENT_CLASSES], Field(discriminator="type")]  # type: ignore[valid-type]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(SystemEvent)


def parse_system_event(data: bytes | str) -> Any:
    return _ADAPTER.validate_json(data)


def system_subject(event_type: str) -> str:
    return f"{SYSTEM_PREFIX}.{event_type}"
