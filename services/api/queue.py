"""The queue as the API sees it: the `paused` control in the queue bucket (every downloader watches it), the
tickets waiting per priority (the work consumers' counts) and what each downloader process runs (its heartbeat)."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from typing import Callable

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, Field

from contracts import events as ev
from contracts.schedule import Schedule, ScheduleRecord, ScheduleStatus, status
from contracts.system import SiteCooldown
from services.runtime.clock import utcnow
from services.runtime.cooldown import Cooldowns, read_cooldowns
from services.runtime.nats.kv import read_bucket
from services.runtime.nats.topology import (
    PACING_BUCKET,
    PAUSED_KEY,
    QUEUE_BUCKET,
    TICKET_DURABLES,
    WORK_STREAM,
    WORKERS_BUCKET,
)
from services.runtime.schedule import read_schedule, read_usage, write_schedule

log = logging.getLogger("tubeflow.api.queue")

MAX_WORKERS_LISTED = 256


class Waiting(BaseModel):
    priority: ev.Priority
    waiting: int = Field(description="items of unheld, unfinished jobs no worker runs yet (from the jobs' views)")
    taken: int = Field(description="tickets a worker holds (running, or waiting for its site's limit)")
    tickets: int = Field(
        default=0,
        description="tickets no worker has taken yet, stale ones included (a priority change leaves the old ones, "
        "dropped when taken)",
    )


class WorkerState(BaseModel):
    worker: str
    slots: int
    running: list[dict]
    paused: bool = False
    at: datetime | None = None
    engine: str | None = Field(default=None, description="the yt-dlp version its new downloads run")


class QueueState(BaseModel):
    paused: bool
    # True when the pause also stopped the running downloads (`?now=true`).
    now: bool = False
    paused_at: datetime | None = None
    jobs: dict[str, int] = Field(description="jobs per status")
    items: list[Waiting]
    workers: list[WorkerState]
    cooldowns: list[SiteCooldown] = Field(
        default_factory=list,
        description="sites that pushed back (429, a bot check, a burst of 403s): no requests go to them until `until` "
        "(ended ones stay listed until downloads from them went well again, for their `level`)",
    )
    schedule: ScheduleStatus | None = Field(
        default=None,
        description="the download schedule now (PUT /api/queue/schedule): inside a window or not and until when, the "
        "budget, today's bytes against each cap, and why downloads wait or run slowly",
    )


class QueueControl:
    def __init__(
        self,
        js: JetStreamContext,
        queue: KeyValue,
        workers: KeyValue,
        pacing: KeyValue,
        worker: str,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.js = self._js = js
        # The clock the download schedule reads (TUBEFLOW_CLOCK_OFFSET).
        self._now = now
        self._queue = queue
        self._workers = workers
        self._pacing = pacing
        # Ends a cool-down on request (the API never starts one).
        self.cooldowns = Cooldowns(js, pacing, 0.0, worker)

    @classmethod
    async def open(
        cls, js: JetStreamContext, worker: str = "api", now: Callable[[], datetime] = utcnow
    ) -> "QueueControl":
        return cls(
            js,
            await js.key_value(QUEUE_BUCKET),
            await js.key_value(WORKERS_BUCKET),
            await js.key_value(PACING_BUCKET),
            worker,
            now,
        )

    async def schedule(self) -> ScheduleRecord:
        return await read_schedule(self._queue)

    async def set_schedule(self, schedule: Schedule | None, by: str) -> ScheduleRecord:
        return await write_schedule(self._js, self._queue, schedule, by)

    async def schedule_status(self) -> ScheduleStatus:
        record = await read_schedule(self._queue)
        now = self._now()
        current = record.schedule or Schedule()
        return status(record.schedule, now, await read_usage(self._queue, current.day(now)))

    async def set_paused(self, paused: bool, now: bool = False) -> None:
        value = {"paused": paused, "now": now and paused, "at": utcnow().isoformat()}
        await self._queue.put(PAUSED_KEY, json.dumps(value).encode())

    async def paused(self) -> dict:
        try:
            entry = await self._queue.get(PAUSED_KEY)
        except KeyNotFoundError:
            return {}
        try:
            value = json.loads(entry.value or b"{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    async def _waiting(self, priority: str) -> Waiting:
        try:
            info = await self._js.consumer_info(WORK_STREAM, TICKET_DURABLES[priority])
        except NotFoundError:
            return Waiting(priority=priority, waiting=0, taken=0)  # type: ignore[arg-type]
        return Waiting(priority=priority, waiting=info.num_pending or 0, taken=info.num_ack_pending or 0)  # type: ignore[arg-type]

    async def worker_states(self) -> list[WorkerState]:
        states = []
        for key, value in sorted((await read_bucket(self._workers)).items())[:MAX_WORKERS_LISTED]:
            try:
                states.append(WorkerState.model_validate_json(value))
            except ValueError as exc:  # unreadable: left out
                log.debug("worker %s: %s", key, exc)
        return states

    async def state(self, jobs: dict[str, int], unfinished: dict[str, int] | None = None) -> QueueState:
        """``unfinished``: items not downloaded yet per priority (``JobIndex.unfinished_items``): the waiting count
        is those less the running ones (tickets counted dropped ones as waiting, issue 23)."""
        paused, tickets, workers, cooldowns, schedule = await asyncio.gather(
            self.paused(),
            asyncio.gather(*(self._waiting(p) for p in ev.PRIORITIES)),
            self.worker_states(),
            read_cooldowns(self._pacing),
            self.schedule_status(),
        )
        items = list(tickets)
        if unfinished is not None:
            running: dict[str, int] = {}
            for worker in workers:
                for entry in worker.running:
                    priority = str(entry.get("priority", "normal"))
                    running[priority] = running.get(priority, 0) + 1
            items = [
                w.model_copy(
                    update={
                        "tickets": w.waiting,
                        "waiting": max(0, unfinished.get(w.priority, 0) - running.get(w.priority, 0)),
                    }
                )
                for w in tickets
            ]
        return QueueState(
            paused=bool(paused.get("paused")),
            now=bool(paused.get("now")),
            paused_at=paused.get("at") if paused.get("paused") else None,
            jobs=jobs,
            items=items,
            workers=workers,
            cooldowns=cooldowns,
            schedule=schedule,
        )
