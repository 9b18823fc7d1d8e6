"""The download schedule as every process reads it (issue 29): the queue bucket's ``schedule`` key (one record,
written by the API with a `schedule.changed` event on TUBEFLOW_SYSTEM beside it), the bytes downloaded per day
(``usage.<date>`` keys, raised by compare-and-set by each downloader), and the clock the schedule reads."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Callable

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from contracts.schedule import DayUsage, Schedule, ScheduleRecord
from contracts.system import ScheduleChanged, ScheduleChangedData
from services.runtime.clock import utcnow
from services.runtime.jsonfile import SettingsFileError, read_json_object
from services.runtime.nats.publish import publish_system

log = logging.getLogger("tubeflow.schedule")

SCHEDULE_KEY = "schedule"
USAGE_PREFIX = "usage."
# Days of usage kept in the bucket (older ones are removed by the downloader that starts a new day).
USAGE_KEPT_DAYS = 14
# Sites listed in a day's usage at most (the rest count under "other").
MAX_USAGE_SITES = 500


def read_schedule_file(path: Path) -> Schedule:
    """TUBEFLOW_SCHEDULE_FILE, checked whole: a problem names the setting, the file, the field and what is wrong."""
    loaded = read_json_object(path, "TUBEFLOW_SCHEDULE_FILE", "the schedule's fields")
    try:
        return Schedule.model_validate(loaded)
    except ValueError as exc:
        problem = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'schedule'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()  # type: ignore[attr-defined]
        )
        raise SettingsFileError(f"TUBEFLOW_SCHEDULE_FILE {path}: {problem}") from None


def schedule_clock(offset: float = 0.0) -> Callable[[], datetime]:
    """The clock the schedule reads: the wall clock, moved by TUBEFLOW_CLOCK_OFFSET seconds (tests)."""
    if not offset:
        return utcnow
    shift = timedelta(seconds=offset)
    return lambda: utcnow() + shift


def decode_record(value: bytes | None) -> ScheduleRecord:
    try:
        return ScheduleRecord.model_validate_json(value or b"{}")
    except ValueError as exc:  # unreadable (written by a newer version?): no schedule, said once per read
        log.warning("the queue bucket's schedule can't be read (%s): none in force", exc)
        return ScheduleRecord()


async def read_schedule(kv: KeyValue) -> ScheduleRecord:
    try:
        entry = await kv.get(SCHEDULE_KEY)
    except KeyNotFoundError:
        return ScheduleRecord()
    return decode_record(entry.value)


async def write_schedule(js: JetStreamContext, kv: KeyValue, schedule: Schedule | None, by: str) -> ScheduleRecord:
    """Put ``schedule`` in force (None: none) for every downloader, and record who did (`schedule.changed`)."""
    record = ScheduleRecord(schedule=schedule, at=utcnow(), by=by[:200])
    await kv.put(SCHEDULE_KEY, record.model_dump_json().encode())
    event = ScheduleChanged(
        type="schedule.changed",
        event_id=uuid.uuid4().hex,
        occurred_at=record.at,
        data=ScheduleChangedData(schedule=schedule, by=by[:200]),
    )
    try:
        await publish_system(js, event)
    except Exception as exc:  # the schedule is in force; its record is what is missing
        log.warning("schedule.changed not recorded: %s", exc)
    return record


def usage_key(day: date) -> str:
    return f"{USAGE_PREFIX}{day.isoformat()}"


async def read_usage(kv: KeyValue, day: date) -> DayUsage:
    try:
        entry = await kv.get(usage_key(day))
    except KeyNotFoundError:
        return DayUsage()
    return _decode_usage(entry.value)


def _decode_usage(value: bytes | None) -> DayUsage:
    try:
        return DayUsage.model_validate_json(value or b"{}")
    except ValueError:
        return DayUsage()


async def add_usage(kv: KeyValue, day: date, sites: dict[str, int]) -> DayUsage:
    """Add bytes per site to ``day``'s usage (compare-and-set: several downloaders add at once); returns the day's."""
    key = usage_key(day)
    for _ in range(50):
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            entry = None
        usage = _decode_usage(entry.value if entry is not None else None)
        for site, n in sites.items():
            if site not in usage.sites and len(usage.sites) >= MAX_USAGE_SITES:
                site = "other"
            usage.sites[site] = usage.sites.get(site, 0) + n
            usage.total += n
        value = json.dumps(usage.model_dump()).encode()
        try:
            if entry is None:
                await kv.create(key, value)
                await _forget_old_days(kv, day)
            else:
                await kv.update(key, value, last=entry.revision)
            return usage
        except KeyWrongLastSequenceError:
            await asyncio.sleep(0.005)
    raise RuntimeError(f"{key}: too many downloaders adding at once")


async def _forget_old_days(kv: KeyValue, today: date) -> None:
    try:
        keys = await kv.keys()
    except Exception:  # no keys, or NATS away: tried again on the next new day
        return
    oldest = today - timedelta(days=USAGE_KEPT_DAYS)
    for key in keys:
        if key.startswith(USAGE_PREFIX):
            try:
                if date.fromisoformat(key[len(USAGE_PREFIX) :]) < oldest:
                    await kv.delete(key)
            except ValueError:
                continue
