"""Which yt-dlp runs, across every process (issue 27): the last `engine.updated` on TUBEFLOW_SYSTEM says which version
is in force. ``update`` and ``rollback`` install and check a version here and record it (or `engine.update_failed`);
an ``EngineFollower`` in each downloader and scheduler hears it, installs that version into its own data dir if it
is not there (TUBEFLOW_ENGINE_DIR: in Kubernetes each pod's own volume, no shared writable code), and switches its slot pools, so new
calls run on it and running ones finish where they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from contracts.system import (
    EngineUpdated,
    EngineUpdatedData,
    EngineUpdateFailed,
    EngineUpdateFailedData,
    parse_system_event,
    system_subject,
)
from services.engine.updates import Engine, UpdateFailed, bundled_version, engine_for, install
from services.runtime.nats.publish import publish_system
from services.runtime.nats.topology import SYSTEM_STREAM

log = logging.getLogger("tubeflow.engines")

UPDATED = system_subject("engine.updated")


async def in_force(js: JetStreamContext) -> EngineUpdatedData | None:
    """The last `engine.updated` (None: never updated, the bundled yt-dlp runs)."""
    try:
        message = await js.get_last_msg(SYSTEM_STREAM, UPDATED)
    except NotFoundError:
        return None
    try:
        return parse_system_event(message.data).data
    except ValueError:
        return None


async def last_failure(js: JetStreamContext) -> EngineUpdateFailedData | None:
    try:
        message = await js.get_last_msg(SYSTEM_STREAM, system_subject("engine.update_failed"))
        return parse_system_event(message.data).data
    except (NotFoundError, ValueError):
        return None


def _now() -> datetime:
    return datetime.now(timezone.utc)


async def _failed(js: JetStreamContext, version: str | None, reason: str, worker: str) -> None:
    event = EngineUpdateFailed(
        event_id=uuid.uuid4().hex,
        type="engine.update_failed",
        occurred_at=_now(),
        data=EngineUpdateFailedData(version=version, reason=reason[:2000], worker=worker),
    )
    try:
        await publish_system(js, event)
    except Exception as exc:  # the failure is logged and answered; its record is what is missing
        log.warning("engine.update_failed not recorded: %s", exc)


async def _record(js: JetStreamContext, data: EngineUpdatedData) -> None:
    await publish_system(
        js, EngineUpdated(event_id=uuid.uuid4().hex, type="engine.updated", occurred_at=_now(), data=data)
    )


async def update(js: JetStreamContext, engine_dir: Path, worker: str, version: str | None = None) -> EngineUpdatedData:
    """Install and check yt-dlp ``version`` (None: the newest on the index) and put it in force everywhere; the
    `engine.updated` recorded (not recorded again when that version is in force already). UpdateFailed after
    recording `engine.update_failed` otherwise."""
    current = await in_force(js)
    active = current.version if current is not None else bundled_version()
    try:
        engine = await asyncio.to_thread(install, engine_dir, version)
    except UpdateFailed as exc:
        log.warning("yt-dlp update to %s failed: %s", version or "the newest", exc)
        await _failed(js, version, str(exc), worker)
        raise
    if engine.version == active:
        return current or EngineUpdatedData(version=active, worker=worker)
    data = EngineUpdatedData(version=engine.version, previous=active, worker=worker)
    await _record(js, data)
    log.info("yt-dlp %s is in force (was %s)", engine.version, active)
    return data


class NothingToRollBack(Exception):
    pass


class UpdateRunning(Exception):
    """Another update or rollback runs in this process: one at a time."""


_changing = asyncio.Lock()


async def one_at_a_time(change: Any) -> EngineUpdatedData:
    """Run an update or rollback unless one runs already here (UpdateRunning)."""
    if _changing.locked():
        change.close()  # never started
        raise UpdateRunning("an update of yt-dlp is running: try again when it is done")
    async with _changing:
        return await change


async def rollback(js: JetStreamContext, engine_dir: Path, worker: str) -> EngineUpdatedData:
    """Put the version before the one in force back in force (installed here again if it is not)."""
    current = await in_force(js)
    if current is None or not current.previous:
        raise NothingToRollBack("the bundled yt-dlp runs: there is nothing to roll back to")
    if engine_for(engine_dir, current.previous) is None:
        try:
            await asyncio.to_thread(install, engine_dir, current.previous)
        except UpdateFailed as exc:
            await _failed(js, current.previous, f"rollback: {exc}", worker)
            raise
    data = EngineUpdatedData(version=current.previous, previous=current.version, rollback=True, worker=worker)
    await _record(js, data)
    log.info("yt-dlp rolled back to %s (from %s)", current.previous, current.version)
    return data


class EngineFollower:
    """Keeps this process's slot pools on the yt-dlp in force: at start, and on each `engine.updated`."""

    def __init__(self, js: JetStreamContext, engine_dir: Path, pools: list[Any], worker: str) -> None:
        self._js, self._engine_dir, self._pools, self._worker = js, Path(engine_dir), pools, worker
        self.running = Engine(bundled_version())
        self._lock = asyncio.Lock()
        self._sub: Any = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self, nc: Any) -> "EngineFollower":
        async def heard(msg: Any) -> None:
            try:
                data = parse_system_event(msg.data).data
            except ValueError:
                return
            task = asyncio.create_task(self.follow(data))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._sub = await nc.subscribe(UPDATED, cb=heard)
        current = await in_force(self._js)
        if current is not None:
            await self.follow(current)
        return self

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as exc:  # the connection is closing anyway
                log.debug("engine watch: %s", exc)

    async def follow(self, data: EngineUpdatedData) -> None:
        """Run ``data.version`` from now on (installed here first if need be); on failure, keep what runs."""
        async with self._lock:
            if data.version == self.running.version:
                return
            engine = engine_for(self._engine_dir, data.version)
            if engine is None:
                try:
                    engine = await asyncio.to_thread(install, self._engine_dir, data.version)
                except UpdateFailed as exc:
                    log.error("yt-dlp %s is in force but could not be installed here: %s", data.version, exc)
                    await _failed(self._js, data.version, f"{self._worker}: {exc}", self._worker)
                    return
            for pool in self._pools:
                pool.switch(engine.path)
            log.info("new yt-dlp calls run on %s (was %s)", engine.version, self.running.version)
            self.running = engine


# TUBEFLOW_YTDLP_AUTO_UPDATE: when the scheduler holding the lease looks for a newer yt-dlp.
NIGHTLY_HOUR = 3
AUTO_KEY = "engine-auto-update"


def next_auto_update(mode: str, last: datetime | None, now: datetime) -> datetime | None:
    """When the next automatic look is due (None: off). ``daily``: 24 h after the last look (at once when there was
    none); ``nightly``: the next 03:00 local time after the last look (or today's, when none was made since)."""
    if mode == "daily":
        return now if last is None else last + timedelta(days=1)
    if mode == "nightly":
        local = (last or now - timedelta(days=1)).astimezone()
        night = local.replace(hour=NIGHTLY_HOUR, minute=0, second=0, microsecond=0)
        if night <= local:
            night += timedelta(days=1)
        return night.astimezone(timezone.utc)
    return None


async def auto_update(
    js: JetStreamContext, kv: Any, engine_dir: Path, worker: str, mode: str, holding: Any, stop: asyncio.Event
) -> None:
    """Look for a newer yt-dlp on the schedule, while this process holds the scheduler's lease (one looks across
    replicas); the time of the last look is kept in the scheduler bucket, so a restart does not look again."""
    if mode == "off":
        return
    while not stop.is_set():
        last = None
        with contextlib.suppress(Exception):
            entry = await kv.get(AUTO_KEY)
            last = datetime.fromisoformat(entry.value.decode())
        due = next_auto_update(mode, last, _now())
        if due is not None and due <= _now() and holding():
            with contextlib.suppress(Exception):
                await kv.put(AUTO_KEY, _now().isoformat().encode())
            try:
                await update(js, engine_dir, worker)
            except UpdateFailed:
                pass  # recorded as engine.update_failed; the next look is on schedule
            except Exception as exc:  # NATS away: tried at the next look
                log.warning("automatic yt-dlp update: %s", exc)
            continue
        wait = 60.0 if due is None else min(max((due - _now()).total_seconds(), 1.0), 600.0)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)
