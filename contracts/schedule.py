"""The download schedule (issue 29): when downloads run (windows in a time zone), how fast all of them together (one
bandwidth budget for the installation) and how many bytes a day (in total and per site). Pure: the model with its
validation, and the window arithmetic every downloader and API replica computes the same way.

A window is open while the wall clock in the schedule's time zone reads a time in it on one of its days: a window
from 23:00 to 01:00 on "fri" runs from Friday 23:00 into Saturday 01:00; ``from`` equal to ``to`` is a whole day from
then. Across a DST change the wall clock decides: a window inside the skipped hour does not open that day, one in
the repeated hour is open for both of its passes. Sizes and rates are bytes, with K, M, G, T in powers of 1024 (as
yt-dlp's ``--limit-rate``): "400K" is 409,600 bytes (a second)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
MAX_WINDOWS = 50
MAX_SITE_CAPS = 100
# The largest size or rate anyone means (1 PiB): beyond it, a typo.
MAX_BYTES = 1 << 50
WEEK = 7 * 86400
# How far ahead the next opening or closing is looked for (a week and a day covers every weekly pattern).
HORIZON_DAYS = 9

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?")
_SITE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


def parse_size(text: str | int) -> int:
    """ "200K", "1.5M", "20G", "20GB", "20 GiB" or a number of bytes -> bytes (ValueError: not a size, or not above 0)."""
    if isinstance(text, bool):
        raise ValueError("not a size")
    if isinstance(text, int):
        value = float(text)
    else:
        m = _SIZE.fullmatch(str(text).strip())
        if m is None:
            raise ValueError(f"{str(text)[:40]!r} is not a size: a number with K, M, G or T (powers of 1024), e.g. 5M")
        value = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if value < 1:
        raise ValueError("must be at least 1 byte (leave it out for no limit)")
    if value > MAX_BYTES:
        raise ValueError("is larger than 1 PiB")
    return int(value)


def _size(value: str | int) -> str:
    parse_size(value)
    return str(value).strip().upper() if isinstance(value, str) else str(value)


def _clock(value: str) -> str:
    if not isinstance(value, str) or _CLOCK.fullmatch(value.strip()) is None:
        raise ValueError("must be a time of day, HH:MM or HH:MM:SS (00:00 to 23:59:59)")
    return value.strip()


def _zone(value: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 64 or ".." in value or value.startswith("/"):
        raise ValueError("is not a time zone")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r} (an IANA name, e.g. Europe/Berlin)") from exc
    return value


Size = Annotated[str, AfterValidator(_size)]
ClockTime = Annotated[str, AfterValidator(_clock)]


def clock_time(text: str) -> time:
    m = _CLOCK.fullmatch(text)
    assert m is not None
    return time(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


class Window(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, serialize_by_alias=True)

    days: list[Day] = Field(
        default_factory=lambda: list(DAYS),
        min_length=1,
        max_length=7,
        description="the days it opens on (all by default)",
    )
    from_: ClockTime = Field(alias="from", description="when it opens, HH:MM or HH:MM:SS, wall clock")
    to: ClockTime = Field(description="when it closes (earlier than `from`: the next day; equal: 24 h later)")

    @field_validator("days")
    @classmethod
    def _unique(cls, days: list[str]) -> list[str]:
        if len(set(days)) != len(days):
            raise ValueError("names a day twice")
        return days

    @property
    def opens(self) -> time:
        return clock_time(self.from_)

    @property
    def closes(self) -> time:
        return clock_time(self.to)

    def spans(self) -> list[tuple[int, int]]:
        """Its openings as [start, end) seconds of the week from Monday 00:00 (an end may pass the week's)."""
        start, end = _seconds(self.opens), _seconds(self.closes)
        length = end - start if end > start else end - start + 86400
        return [(DAYS.index(day) * 86400 + start, DAYS.index(day) * 86400 + start + length) for day in self.days]


class Schedule(BaseModel):
    """``PUT /api/queue/schedule``'s body and what every downloader follows. No windows: downloads may run at any
    time (the budget and caps still hold)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timezone: Annotated[str, AfterValidator(_zone)] = Field(default="UTC", description="an IANA time zone")
    windows: list[Window] = Field(default_factory=list, max_length=MAX_WINDOWS)
    outside: Literal["wait", "slow"] = Field(
        default="wait", description="outside every window new downloads wait, or run at `slow_rate`"
    )
    slow_rate: Size | None = Field(
        default=None, validate_default=True, description="the budget outside the windows when `outside` is slow"
    )
    rate: Size | None = Field(
        default=None, description="bytes a second for all downloads of the installation together, e.g. 5M"
    )
    daily_cap: Size | None = Field(default=None, description="bytes a day (since local midnight) over all sites")
    site_caps: dict[str, Size] = Field(
        default_factory=dict, description="bytes a day per site (a site covers its subdomains), e.g. youtube.com: 10G"
    )
    running_at_window_end: Literal["pause", "finish"] = Field(
        default="pause", description="what downloads still running when a window closes do"
    )

    @field_validator("windows")
    @classmethod
    def _apart(cls, windows: list[Window]) -> list[Window]:
        spans = [
            (start % WEEK, end - start + start % WEEK, n) for n, w in enumerate(windows) for start, end in w.spans()
        ]
        for i, (start, end, n) in enumerate(spans):
            for other_start, other_end, m in spans[i + 1 :]:
                # On the week's circle: compared as they are, and a week apart (Sunday night into Monday).
                if any(start < other_end + shift and other_start + shift < end for shift in (-WEEK, 0, WEEK)):
                    raise ValueError(f"window {n + 1} overlaps window {m + 1}")
        return windows

    @field_validator("slow_rate")
    @classmethod
    def _slow(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("outside") == "slow":
            raise ValueError("is needed when `outside` is slow")
        return value

    @field_validator("site_caps")
    @classmethod
    def _sites(cls, caps: dict[str, str]) -> dict[str, str]:
        if len(caps) > MAX_SITE_CAPS:
            raise ValueError(f"at most {MAX_SITE_CAPS} sites")
        out = {}
        for site, cap in caps.items():
            name = site.strip().lower().removeprefix("www.")
            if len(name) > 253 or _SITE.fullmatch(name) is None:
                raise ValueError(f"{site[:60]!r} is not a site name (a host such as youtube.com)")
            out[name] = cap
        return out

    # --- numbers ---------------------------------------------------------------------------------------------------

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def budget(self, in_window: bool) -> int | None:
        """Bytes a second for every download of the installation together (None: no budget)."""
        if not in_window and self.outside == "slow":
            return parse_size(self.slow_rate) if self.slow_rate else None
        return parse_size(self.rate) if self.rate else None

    def caps(self) -> tuple[int | None, dict[str, int]]:
        return (
            parse_size(self.daily_cap) if self.daily_cap else None,
            {site: parse_size(cap) for site, cap in self.site_caps.items()},
        )

    # --- windows ---------------------------------------------------------------------------------------------------

    def is_open(self, now: datetime) -> bool:
        return not self.windows or wall_open(plain(self.windows), now.astimezone(self.zone).replace(tzinfo=None))

    def window(self, now: datetime) -> "WindowState":
        """Open or not at ``now``, and until when (None: it never changes)."""
        if not self.windows:
            return WindowState(True, None)
        return window_state(plain(self.windows), self.timezone, now)

    def day(self, now: datetime) -> date:
        return now.astimezone(self.zone).date()

    def next_midnight(self, now: datetime) -> datetime:
        return next_midnight(self.timezone, now)


@dataclass(frozen=True)
class WindowState:
    open: bool
    until: datetime | None


# A window as (days, opens, closes): hashable, for the cache of boundaries.
Plain = tuple[tuple[str, ...], time, time]


def plain(windows: list[Window] | tuple[Window, ...]) -> tuple[Plain, ...]:
    return tuple((tuple(w.days), w.opens, w.closes) for w in windows)


def _seconds(t: time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


def wall_open(windows: tuple[Plain, ...], local: datetime) -> bool:
    """The definition: a window is open while the wall clock ``local`` reads a time in it on one of its days."""
    t = local.time().replace(microsecond=0)
    today, yesterday = DAYS[local.weekday()], DAYS[(local.weekday() - 1) % 7]
    for days, start, end in windows:
        if start < end:
            if today in days and start <= t < end:
                return True
        elif (today in days and t >= start) or (yesterday in days and t < end):
            return True
    return False


def _offset(zone: ZoneInfo, epoch: int) -> timedelta | None:
    return datetime.fromtimestamp(epoch, timezone.utc).astimezone(zone).utcoffset()


def _wall_at_least(zone: ZoneInfo, local: datetime) -> list[datetime]:
    """The instants the wall clock reaches ``local``: one, two in a repeated hour, or, when it is skipped, the moment
    the clock jumps past it."""
    found = []
    for fold in (0, 1):
        instant = local.replace(tzinfo=zone, fold=fold).astimezone(timezone.utc)
        if instant.astimezone(zone).replace(tzinfo=None) == local and instant not in found:
            found.append(instant)
    if found:
        return found
    # Skipped: the clock jumps over it between the two readings' instants; the jump is at a whole second.
    low = int(local.replace(tzinfo=zone, fold=1).timestamp())
    high = int(local.replace(tzinfo=zone, fold=0).timestamp()) + 1
    low, high = min(low, high), max(low, high)
    while high - low > 1:
        mid = (low + high) // 2
        if datetime.fromtimestamp(mid, timezone.utc).astimezone(zone).replace(tzinfo=None) >= local:
            high = mid
        else:
            low = mid
    return [datetime.fromtimestamp(high, timezone.utc)]


def _transitions(zone: ZoneInfo, first: date, days: int) -> list[datetime]:
    """The instants the zone's offset changes between ``first`` and ``days`` later (each to the second)."""
    out = []
    for n in range(days):
        day = first + timedelta(days=n)
        low = int(datetime.combine(day, time(), tzinfo=zone).timestamp())
        high = low + 86400 + 7200
        if _offset(zone, low) == _offset(zone, high):
            continue
        start = _offset(zone, low)
        while high - low > 1:
            mid = (low + high) // 2
            if _offset(zone, mid) == start:
                low = mid
            else:
                high = mid
        instant = datetime.fromtimestamp(high, timezone.utc)
        if instant not in out:
            out.append(instant)
    return out


@lru_cache(maxsize=64)
def _changes(windows: tuple[Plain, ...], zone_name: str, first: date) -> tuple[datetime, ...]:
    """Every instant in the days from ``first`` at which a window may open or close (its boundaries as the wall clock
    reaches them, and the zone's offset changes), sorted."""
    zone = ZoneInfo(zone_name)
    times = sorted({t for _days, opens, closes in windows for t in (opens, closes)})
    instants: set[datetime] = set(_transitions(zone, first, HORIZON_DAYS))
    for n in range(HORIZON_DAYS):
        day = first + timedelta(days=n)
        for t in times:
            instants.update(_wall_at_least(zone, datetime.combine(day, t)))
    return tuple(sorted(instants))


def window_state(windows: tuple[Plain, ...], zone_name: str, now: datetime) -> WindowState:
    zone = ZoneInfo(zone_name)
    local = now.astimezone(zone)
    is_open = wall_open(windows, local.replace(tzinfo=None))
    for instant in _changes(windows, zone_name, local.date() - timedelta(days=1)):
        if instant > now and wall_open(windows, instant.astimezone(zone).replace(tzinfo=None)) != is_open:
            return WindowState(is_open, instant)
    return WindowState(is_open, None)


def next_midnight(zone_name: str, now: datetime) -> datetime:
    """When the schedule's day after ``now``'s begins (the first instant its wall clock reads the next date)."""
    zone = ZoneInfo(zone_name)
    tomorrow = now.astimezone(zone).date() + timedelta(days=1)
    return min(_wall_at_least(zone, datetime.combine(tomorrow, time())))


class ScheduleRecord(BaseModel):
    """What the queue bucket's ``schedule`` key holds: the schedule in force (None: none), who set it and when."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    schedule: Schedule | None = None
    at: datetime | None = None
    by: str | None = Field(default=None, max_length=200)


class DayUsage(BaseModel):
    """Bytes downloaded on one day of the schedule's time zone, in total and per site (the queue bucket's
    ``usage.<date>``; every downloader adds what it received)."""

    model_config = ConfigDict(extra="ignore")

    total: int = Field(default=0, ge=0)
    sites: dict[str, int] = Field(default_factory=dict)

    def of(self, cap_site: str, caps: dict[str, int]) -> int:
        """Bytes of the sites the cap ``cap_site`` covers (the site and its subdomains, unless a longer cap does)."""
        return sum(n for site, n in self.sites.items() if cap_key(site, caps) == cap_site)


def cap_key(site: str, caps: dict[str, int] | dict[str, str]) -> str | None:
    """The cap that holds for ``site``: the longest cap site it is, or is under."""
    best = None
    for key in caps:
        if (site == key or site.endswith("." + key)) and (best is None or len(key) > len(best)):
            best = key
    return best


class SiteUsage(BaseModel):
    site: str
    bytes: int
    cap: int


class ScheduleStatus(BaseModel):
    """What the schedule means now (`GET /api/queue`'s ``schedule``): the window, the budget, today's bytes against
    each cap, and one line for a person ("outside the download window — next at 01:00")."""

    set: bool = Field(description="a schedule is in force (else downloads run whenever, without a budget or caps)")
    open: bool = Field(description="inside a window (or no windows)")
    until: datetime | None = Field(default=None, description="when the window closes (open) or opens next")
    outside: Literal["wait", "slow"] = "wait"
    budget: int | None = Field(default=None, description="bytes a second for all downloads together now")
    day: date
    bytes: int = Field(description="bytes downloaded today (since local midnight)")
    cap: int | None = None
    sites: list[SiteUsage] = Field(default_factory=list)
    message: str | None = Field(default=None, description="why downloads wait or run slowly, if they do")


def human_bytes(n: float) -> str:
    for unit, size in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.1f}".removesuffix(".0") + f" {unit}"
    return f"{int(n)} B"


def _of(used: float, cap: int) -> str:
    """ "19.8 of 20 GB": both in the cap's unit."""
    for unit, size in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10), ("B", 1)):
        if cap >= size:
            return (
                f"{used / size:.1f}".removesuffix(".0") + " of " + f"{cap / size:.1f}".removesuffix(".0") + f" {unit}"
            )
    return f"{int(used)} of {cap} B"


def local_time(schedule: Schedule, at: datetime, now: datetime) -> str:
    """``at`` as the schedule's wall clock: "01:00", or "Fri 01:00" when it is not today."""
    local, today = at.astimezone(schedule.zone), now.astimezone(schedule.zone)
    text = f"{local:%H:%M}" if local.second == 0 else f"{local:%H:%M:%S}"
    return text if local.date() == today.date() else f"{DAYS[local.weekday()].capitalize()} {text}"


def status(schedule: Schedule | None, now: datetime, usage: DayUsage) -> ScheduleStatus:
    current = schedule or Schedule()
    window = current.window(now)
    total_cap, site_caps = current.caps()
    sites = [SiteUsage(site=site, bytes=usage.of(site, site_caps), cap=cap) for site, cap in sorted(site_caps.items())]
    message = None
    if total_cap is not None and usage.total >= total_cap:
        message = f"daily cap reached: {_of(usage.total, total_cap)}"
    elif not window.open and current.outside == "wait":
        message = "outside the download window" + (
            f" — next at {local_time(current, window.until, now)}" if window.until else ""
        )
    elif not window.open:
        budget = current.budget(False)
        message = "outside the download window: downloads run slowly" + (
            f" ({human_bytes(budget)}/s)" if budget else ""
        )
    full = [s for s in sites if s.bytes >= s.cap]
    if message is None and full:
        message = "; ".join(f"daily cap of {s.site} reached: {_of(s.bytes, s.cap)}" for s in full)
    return ScheduleStatus(
        set=schedule is not None,
        open=window.open,
        until=window.until,
        outside=current.outside,
        budget=current.budget(window.open),
        day=current.day(now),
        bytes=usage.total,
        cap=total_cap,
        sites=sites,
        message=message,
    )
