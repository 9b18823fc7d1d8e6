"""Subscriptions: a channel, playlist or feed checked on a schedule, each new entry becoming a job. Stored as events on
``tubeflow.subscription.<id>.<type>`` (stream TUBEFLOW_SUBSCRIPTIONS) and folded by ``apply_subscription`` into the
view every reader shares (the API, the scheduler, the notifier). Pure: the clock comes from the events."""

from __future__ import annotations

import fnmatch
import re
from datetime import date, datetime, timezone
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from contracts.bounds import MAX_DURATION, Instant, later, seconds
from contracts.ids import new_job_id
from contracts.options import DownloadOptions
from contracts.payloads import AudioFormat, ErrorInfo, Mode, Priority, Requested
from contracts.text import Message, Short, Title
from contracts.validation import refuse

SUBSCRIPTION_PREFIX = "tubeflow.subscription"
ALL_SUBSCRIPTIONS = f"{SUBSCRIPTION_PREFIX}.>"
SUBSCRIPTION_ID = re.compile(r"sb[0-9a-z]{26}")
MAX_SUBSCRIPTIONS = 500
MAX_ITEMS_PER_CHECK = 500
# Entry ids one subscription remembers at most (every process holds them): a source that keeps listing new entries
# past this pauses its subscription (`too_many_entries`) instead of growing every reader's memory.
MAX_SEEN = 50_000
# The jobs a subscription's view remembers (its podcast feed lists the newest of them).
MAX_FEED_JOBS = 1000
# What the new entries of one `checked` may take (a stranger's feed sets their URLs' and titles' lengths): the rest
# wait for the next check, so the event stays well under the stream's message size.
CHECKED_BUDGET = 256 * 1024
MAX_PATTERNS = 20
MAX_PATTERN = 200
# A failing source waits its interval, then twice that, four times… at most this long between tries (or its
# interval, when that is longer).
MAX_BACKOFF = 24 * 3600.0
# The longest interval a subscription may ask for (a longer one is refused; one in an old event is clamped).
MAX_INTERVAL = MAX_DURATION


def new_subscription_id() -> str:
    return "sb" + new_job_id()


def subscription_subject(subscription_id: str, kind: str) -> str:
    """``kind`` is the event type without its ``subscription.`` prefix (created, checked, …)."""
    return f"{SUBSCRIPTION_PREFIX}.{subscription_id}.{kind}"


def subscription_filter(subscription_id: str) -> str:
    return f"{SUBSCRIPTION_PREFIX}.{subscription_id}.>"


# --- what a subscription asks for ------------------------------------------------------------------------------

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_interval(value: str | int | float) -> float:
    """Seconds from "90s", "5m", "1h", "1h30m", "2d" or a number of seconds, at most ``MAX_INTERVAL``; ValueError
    when it is none of these."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not value > 0:  # NaN too
            raise ValueError("must be a positive duration")
        total = float(value)
    else:
        text = str(value).strip().lower()
        match = _DURATION.fullmatch(text) if len(text) <= 40 else None
        if not text or match is None or not any(match.groups()):
            raise ValueError('must be a duration like "30m", "1h", "1h30m", "1d" or a number of seconds')
        days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
        total = float(days * 86400 + hours * 3600 + minutes * 60 + seconds)
    if total > MAX_INTERVAL:
        raise ValueError(f"must be at most {MAX_INTERVAL / 86400:g} days")
    return total


def check_glob(pattern: str) -> str:
    """A title pattern: plain text (matched anywhere in the title) or a glob (``*``, ``?``, ``[abc]``), any case.
    No regular expressions: a client's regex could backtrack for minutes in the scheduler (see SECURITY)."""
    if not pattern.strip():
        raise ValueError("a pattern can't be empty")
    if len(pattern) > MAX_PATTERN or any(ord(c) < 32 for c in pattern):
        raise ValueError(f"a pattern is at most {MAX_PATTERN} printable characters")
    depth = 0
    for n, char in enumerate(pattern):
        if char == "[":
            if depth:
                raise ValueError(f"not a valid glob: '[' inside a [...] class at {n}")
            depth = 1
            if pattern[n + 1 : n + 2] == "]" or pattern[n + 1 : n + 3] == "!]":
                raise ValueError(f"not a valid glob: an empty [...] class at {n}")
        elif char == "]" and depth:
            depth = 0
    if depth:
        raise ValueError("not a valid glob: a '[' is never closed")
    if pattern.count("*") > 8:
        raise ValueError("not a valid glob: at most 8 '*'")
    return pattern


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


class TitleFilter(BaseModel):
    """Which entries become jobs, by title: at least one ``include`` matches (when any is given) and no ``exclude``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    include: list[str] = Field(default=[], max_length=MAX_PATTERNS)
    exclude: list[str] = Field(default=[], max_length=MAX_PATTERNS)

    @field_validator("include", "exclude")
    @classmethod
    def _patterns(cls, values: list[str]) -> list[str]:
        try:
            return [check_glob(v) for v in values]
        except ValueError as exc:
            raise refuse("invalid_glob", str(exc)) from None

    def matches(self, title: str | None) -> bool:
        text = (title or "").lower()
        if self.include and not any(_match(p, text) for p in self.include):
            return False
        return not any(_match(p, text) for p in self.exclude)


def _match(pattern: str, text: str) -> bool:
    pattern = pattern.lower()
    return fnmatch.fnmatchcase(text, pattern) if _is_glob(pattern) else pattern in text


class JobTemplate(BaseModel):
    """What a job asks for besides its URL (a preset's fields already merged): the API makes a job's `requested`
    from it, and a subscription keeps one (with ``skip_downloaded`` on) for the jobs of its entries."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    mode: Mode = "video"
    audio_format: AudioFormat = "mp3"
    format: str | None = None
    options: DownloadOptions | None = None
    preset: Short | None = None
    priority: Priority = "normal"
    start: bool = True

    def requested(self, url: str, playlist_items: str | None = None, title: str | None = None) -> Requested:
        return Requested(
            url=url,
            title=title,
            mode=self.mode,
            audio_format=self.audio_format,
            format=self.format,
            playlist_items=playlist_items,
            options=self.options,
            preset=self.preset,
            start=self.start,
            priority=self.priority,
        )


class SubscriptionSettings(BaseModel):
    """What a subscription is (created with it, replaced whole by `subscription.updated`)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    url: str
    interval: float = Field(description="seconds between checks")
    job: JobTemplate = JobTemplate()
    title_filter: TitleFilter | None = None
    since: date | None = None
    max_items_per_check: int = 50
    name: Title | None = None


# --- events ----------------------------------------------------------------------------------------------------


class NewEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    entry_id: str = Field(max_length=600, description="the entry's id in the source (its URL when it has none)")
    url: str
    title: Title | None = None
    job_id: str


class SubscriptionCreatedData(SubscriptionSettings):
    start: bool = True
    # Who follows it (issue 28): its jobs are theirs; others don't see it.
    owner: Short | None = None


class SubscriptionUpdatedData(SubscriptionSettings):
    pass


class SubscriptionPausedData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    # "requested" (a person asked), or the code of the check that stopped it (not_a_playlist).
    reason: Short = "requested"
    message: Message | None = None


class SubscriptionFeedData(BaseModel):
    """The subscription's podcast feed (issue 30): the key its URL carries (podcast apps can't send a token), or
    None: the feed is off (a revoked key stops working at once)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    key: str | None = Field(default=None, max_length=100)


class SubscriptionEmptyData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class SubscriptionCheckedData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    new: list[NewEntry] = []
    # Entries the source listed, those the title filter or `since` left out, new ones left for the next check (over
    # max_items_per_check).
    found: int = 0
    filtered: int = 0
    remaining: int = 0
    # A paced site's backlog (TUBEFLOW_SITE_PACING): the next batch of the remaining entries is taken then, not at
    # the interval.
    next_batch_at: Instant | None = None
    source_title: Title | None = None
    error: ErrorInfo | None = None
    started_at: Instant | None = None
    worker: Short | None = None


class _SubscriptionEnvelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str
    version: int = 1
    subscription_id: str
    occurred_at: Instant
    seq: int = Field(default=0, exclude=True)


class SubscriptionCreated(_SubscriptionEnvelope):
    type: Literal["subscription.created"]
    data: SubscriptionCreatedData


class SubscriptionUpdated(_SubscriptionEnvelope):
    type: Literal["subscription.updated"]
    data: SubscriptionUpdatedData


class SubscriptionPaused(_SubscriptionEnvelope):
    type: Literal["subscription.paused"]
    data: SubscriptionPausedData = SubscriptionPausedData()


class SubscriptionResumed(_SubscriptionEnvelope):
    type: Literal["subscription.resumed"]
    data: SubscriptionEmptyData = SubscriptionEmptyData()


class SubscriptionDeleted(_SubscriptionEnvelope):
    type: Literal["subscription.deleted"]
    data: SubscriptionEmptyData = SubscriptionEmptyData()


class SubscriptionCheckRequested(_SubscriptionEnvelope):
    type: Literal["subscription.check_requested"]
    data: SubscriptionEmptyData = SubscriptionEmptyData()


class SubscriptionChecked(_SubscriptionEnvelope):
    type: Literal["subscription.checked"]
    data: SubscriptionCheckedData


class SubscriptionFeedChanged(_SubscriptionEnvelope):
    type: Literal["subscription.feed_changed"]
    data: SubscriptionFeedData = SubscriptionFeedData()


SUBSCRIPTION_EVENT_CLASSES = (
    SubscriptionCreated,
    SubscriptionUpdated,
    SubscriptionPaused,
    SubscriptionResumed,
    SubscriptionDeleted,
    SubscriptionCheckRequested,
    SubscriptionChecked,
    SubscriptionFeedChanged,
)
SubscriptionEvent = Annotated[Union[SUBSCRIPTION_EVENT_CLASSES], Field(discriminator="type")]  # type: ignore[valid-type]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(SubscriptionEvent)


def parse_subscription_event(data: bytes | str, seq: int = 0) -> Any:
    event = _ADAPTER.validate_json(data)
    return event.model_copy(update={"seq": seq}) if seq else event


def make_subscription_event(
    kind: str, subscription_id: str, occurred_at: datetime, event_id: str, data: BaseModel | None = None
) -> Any:
    cls = {c.model_fields["type"].annotation.__args__[0]: c for c in SUBSCRIPTION_EVENT_CLASSES}[  # type: ignore[union-attr]
        f"subscription.{kind}"
    ]
    fields: dict[str, Any] = {
        "event_id": event_id,
        "type": f"subscription.{kind}",
        "subscription_id": subscription_id,
        "occurred_at": occurred_at,
    }
    if data is not None:
        fields["data"] = data
    return cls(**fields)


# --- the view and its fold -------------------------------------------------------------------------------------


class SubscriptionView(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    settings: SubscriptionSettings
    created_at: datetime
    updated_at: datetime
    owner: str | None = None
    paused: bool = False
    paused_reason: str | None = None
    paused_message: str | None = None
    deleted: bool = False
    source_title: str | None = None
    checks: int = 0
    # Checks in a row that failed (a failing source backs off), and the last one's error.
    failures: int = 0
    last_error: ErrorInfo | None = None
    last_check_at: datetime | None = None
    # Which scheduler process made the last check.
    last_checked_by: str | None = None
    check_requested_at: datetime | None = None
    new_items: int = 0
    last_new: list[NewEntry] = []
    remaining: int = 0
    next_batch_at: datetime | None = None
    # Entry ids that became jobs: never again.
    seen: frozenset[str] = frozenset()
    # The jobs its checks made, oldest first (the newest MAX_FEED_JOBS: what its podcast feed lists).
    jobs: tuple[str, ...] = ()
    # Its podcast feed's key (None: no feed).
    feed_key: str | None = None
    # Stream sequence of the subscription's last event: a writer publishes expecting it (optimistic concurrency).
    seq: int = 0

    @property
    def next_check_at(self) -> datetime | None:
        """When the scheduler checks next: never while paused; at once when asked; otherwise the interval after the
        last check (doubling per failure in a row, up to a day), or at once for a new subscription."""
        if self.paused or self.deleted:
            return None
        if self.last_check_at is None:
            return self.created_at
        # Clamped: an old event (or a stranger's, written straight into the stream) may hold any number here.
        delay = seconds(self.settings.interval, 1.0, MAX_INTERVAL)
        if self.failures:
            delay = min(max(MAX_BACKOFF, delay), delay * 2 ** min(self.failures - 1, 32))
        scheduled = later(self.last_check_at, delay)
        if self.remaining and self.next_batch_at is not None and not self.failures:
            scheduled = min(scheduled, self.next_batch_at)
        if self.check_requested_at is not None and self.check_requested_at < scheduled:
            return self.check_requested_at
        return scheduled

    def public(self) -> "SubscriptionInfo":
        """What the API shows: the settings beside the state, a count of the seen ids, the next check's time."""
        hidden = ("seen", "seq", "jobs", "feed_key")
        fields = {name: getattr(self, name) for name in SubscriptionView.model_fields if name not in hidden}
        fields.update({name: getattr(self.settings, name) for name in SubscriptionSettings.model_fields})
        del fields["settings"]
        return SubscriptionInfo(
            **fields, seen=len(self.seen), next_check_at=self.next_check_at, feed=self.feed_key is not None
        )


class SubscriptionInfo(SubscriptionSettings):
    """A subscription as the API answers it (`GET /api/subscriptions/{id}`)."""

    id: str
    created_at: datetime
    updated_at: datetime
    owner: str | None = Field(default=None, description="who follows it: its jobs are theirs")
    paused: bool
    paused_reason: str | None = Field(description="requested, or the code of the check that paused it")
    paused_message: str | None
    deleted: bool
    source_title: str | None
    checks: int
    failures: int = Field(description="checks in a row that failed (the next one waits longer each time)")
    last_error: ErrorInfo | None
    last_check_at: datetime | None
    last_checked_by: str | None
    check_requested_at: datetime | None
    new_items: int = Field(description="jobs its checks have made")
    last_new: list[NewEntry] = Field(description="what the last check made jobs of")
    remaining: int = Field(
        description="new entries the last check left for the next (max_items_per_check, or a paced site's batch)"
    )
    next_batch_at: datetime | None = Field(
        default=None,
        description="a paced site's backlog (TUBEFLOW_SITE_PACING): when the next batch of the remaining entries is "
        "taken (null: at the next check)",
    )
    seen: int = Field(description="entries that became jobs, never again")
    next_check_at: datetime | None = Field(description="null while paused")
    feed: bool = Field(default=False, description="it has a podcast feed (GET /api/subscriptions/{id}/feed: its URL)")


def apply_subscription(view: SubscriptionView | None, event: Any) -> SubscriptionView | None:
    """The one fold of a subscription's events (``view`` None before its `created`)."""
    at = event.occurred_at
    if event.type == "subscription.created":
        if view is not None:
            return view.model_copy(update={"seq": event.seq or view.seq})
        data = event.data
        return SubscriptionView(
            id=event.subscription_id,
            settings=SubscriptionSettings.model_validate(data.model_dump(exclude={"start", "owner"})),
            owner=data.owner,
            created_at=at,
            updated_at=at,
            paused=not data.start,
            paused_reason=None if data.start else "requested",
            seq=event.seq,
        )
    if view is None:
        return None  # an event of a subscription this reader never saw created (a cut stream): nothing to fold
    update: dict[str, Any] = {"seq": event.seq or view.seq}
    if event.type == "subscription.updated":
        update.update(settings=SubscriptionSettings.model_validate(event.data.model_dump()), updated_at=at)
    elif event.type == "subscription.paused":
        update.update(paused=True, paused_reason=event.data.reason, paused_message=event.data.message, updated_at=at)
    elif event.type == "subscription.resumed":
        # A resumed source that was failing gets a fresh start (its next check is due at once).
        update.update(paused=False, paused_reason=None, paused_message=None, updated_at=at, check_requested_at=at)
    elif event.type == "subscription.deleted":
        update.update(deleted=True, updated_at=at)
    elif event.type == "subscription.feed_changed":
        update.update(feed_key=event.data.key, updated_at=at)
    elif event.type == "subscription.check_requested":
        update.update(check_requested_at=at)
    elif event.type == "subscription.checked":
        data = event.data
        update.update(checks=view.checks + 1, last_check_at=at, check_requested_at=None, last_checked_by=data.worker)
        if data.error is not None:
            update.update(failures=view.failures + 1, last_error=data.error)
        else:
            update.update(
                failures=0,
                last_error=None,
                new_items=view.new_items + len(data.new),
                last_new=list(data.new),
                remaining=data.remaining,
                next_batch_at=data.next_batch_at if data.remaining else None,
                seen=view.seen | {entry.entry_id for entry in data.new},
                jobs=(view.jobs + tuple(entry.job_id for entry in data.new))[-MAX_FEED_JOBS:],
                source_title=data.source_title or view.source_title,
            )
    return view.model_copy(update=update)


def due(views: Any, now: datetime) -> list[SubscriptionView]:
    """The subscriptions whose next check is at or before ``now``, the longest overdue first."""
    ready = [(v.next_check_at, v.id, v) for v in views if v.next_check_at is not None and v.next_check_at <= now]
    return [v for _, _, v in sorted(ready, key=lambda t: (t[0], t[1]))]


def since_passes(since: date | None, timestamp: float | None) -> bool:
    """An entry older than ``since`` is left out; one whose date the source does not say is kept."""
    if since is None or timestamp is None:
        return True
    try:
        return datetime.fromtimestamp(timestamp, timezone.utc).date() >= since
    except (OverflowError, OSError, ValueError):  # a source's date out of any calendar: as if it gave none
        return True
