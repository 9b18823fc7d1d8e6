"""A downloader process's loop over the download queue: while a slot is free and the queue is not paused, take the
highest waiting ticket (``runtime.nats.priority``), check that it is still due, and download its item; every ticket
is settled by the same ``work.handle`` as the event consumers (in-progress acks, retries, dead letters).

What each process runs is written to the workers bucket every few seconds (``GET /api/queue`` reads it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from contracts import events as ev
from services.downloader.queue import PRIORITY_SEQ, Dispatcher, QueueState, RunMarkers
from services.downloader.schedule import MAX_HELD, ScheduleGate
from services.downloader.sites import PacedTurn, SiteGate, current_turn
from services.runtime.cancellation import Aborted, Cancellations, until_tripped
from services.runtime.clock import utcnow
from services.runtime.nats.priority import Delivery, PriorityFeed
from services.runtime.nats.publish import DeadLetters
from services.runtime.nats.topology import TICKET_DURABLES, WORK_PREFIX, WORK_STREAM
from services.runtime.nats.work import HANDBACK_DELAY, HandedBack, RetryLater, handle
from services.runtime.tasks import either

log = logging.getLogger("tubeflow.tickets")

HEARTBEAT = 5.0
# Items of a site at its limit wait in the process that took them, this many per download slot at most.
MAX_PARKED_PER_SLOT = 4
# A ticket taken just as the queue was paused goes back after this long (nobody takes it while paused).
PAUSED_HANDBACK = 1.0
PURGED_REMEMBERED = 512


def worker_key(worker: str) -> str:
    """The worker's name as a KV key (keys allow letters, digits and -/_=.)."""
    return re.sub(r"[^-/_=.a-zA-Z0-9]", "_", worker)[:200] or "worker"


@dataclass
class TicketLoop:
    nc: Client
    js: JetStreamContext
    worker: str
    concurrency: int
    state: QueueState
    dispatcher: Dispatcher
    markers: RunMarkers
    work: Callable[[ev.ItemQueuedEvent, int], Awaitable[None]]
    ack_wait: float
    cancellations: Cancellations
    # Before the download: wait for the item's site (TUBEFLOW_SITE_CONCURRENCY / _RATE); returns a release.
    gate: SiteGate | None = None
    running: dict[str, dict] = field(default_factory=dict)
    # The yt-dlp version this process's new slots run (said in its heartbeat).
    engine: Callable[[], str] | None = None
    # The download schedule (windows, budget, caps): items wait for it before their site's gate.
    schedule: ScheduleGate | None = None
    _tasks: set[asyncio.Task] = field(default_factory=set)
    # Jobs whose tickets this process purged from the queue (the newest few hundred).
    _purged: OrderedDict[str, None] = field(default_factory=OrderedDict)
    _slots: asyncio.Semaphore | None = None
    _parked: int = 0
    _wanting: int = 0

    async def run(self, stop: asyncio.Event, workers: KeyValue | None = None) -> None:
        ranks = list(ev.PRIORITIES)
        feed = PriorityFeed(self.nc, WORK_STREAM, [TICKET_DURABLES[p] for p in ranks], f"{WORK_PREFIX}.>")
        await feed.start()
        slots = self._slots = asyncio.Semaphore(self.concurrency)
        beat = asyncio.create_task(self._heartbeat(workers, stop)) if workers is not None else None
        try:
            while not stop.is_set():
                held = self.schedule.held if self.schedule is not None else 0
                if self._parked >= MAX_PARKED_PER_SLOT * self.concurrency or held >= MAX_HELD:
                    # Enough items wait for their sites (or the schedule) here already: leave the rest to others.
                    await _first(asyncio.sleep(0.5), stop)
                    continue
                if not await _first(slots.acquire(), stop) or not await _first(self.state.wait_resumed(), stop):
                    break
                got = await feed.next(stop, ready=lambda: not self.state.paused, give_way=lambda: self._wanting > 0)
                if got is None:
                    # Stopping, or an item whose site has room now wants its slot back: it gets this one.
                    slots.release()
                    await asyncio.sleep(0.01)
                    continue
                rank, msg = got
                if self.state.paused:
                    await msg.nak(delay=PAUSED_HANDBACK)
                    slots.release()
                    continue
                task = asyncio.create_task(self._run(ranks[rank], msg))
                self._tasks.add(task)
                task.add_done_callback(lambda t: (self._tasks.discard(t), slots.release()))
        finally:
            await feed.close()
            if beat is not None:
                beat.cancel()

    async def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout``) for the running tickets to be settled; shutdown has tripped their tokens."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in list(self._tasks):
            task.cancel()  # handed back (nak) by work.handle
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5.0)

    async def _off_slot(self, event: ev.ItemQueuedEvent, wait: Awaitable, what: str, parked: bool = True) -> Any:
        """``wait`` (a gate) awaited without holding a download slot; None: the job was cancelled meanwhile."""
        assert self._slots is not None
        token = self.cancellations.token(event.job_id, "download")
        self._slots.release()
        self._parked += parked
        try:
            return await until_tripped(token, wait)
        except Aborted as exc:
            if exc.reason == "cancelled":
                return None
            raise RetryLater(HANDBACK_DELAY, f"handed back while waiting for {what} ({exc.reason})") from exc
        finally:
            self._parked -= parked
            self.cancellations.release(token)
            self._wanting += 1
            try:
                await self._slots.acquire()
            finally:
                self._wanting -= 1

    async def _run(self, priority: str, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        issued = int((msg.headers or {}).get(PRIORITY_SEQ, "0") or 0)

        async def work(event: ev.Envelope, attempt: int) -> None:
            if not isinstance(event, ev.ItemQueuedEvent):
                log.error("not a ticket on %s: a %s event; dropped", msg.subject, event.type)
                return
            if await self.cancellations.is_cancelled(event.job_id):
                await self._purge_tickets(event.job_id)
                return
            controls = await self.dispatcher.controls(event.job_id, False, event.data.priority)
            if controls.priority_seq > issued:
                log.info("ticket of item %s of job %s dropped: its job's priority changed", event.item_id, event.job_id)
                return
            if not await self.markers.take(event, seq):
                log.info("item %s of job %s runs from another ticket; this one dropped", event.item_id, event.job_id)
                return
            if self.schedule is not None and self.schedule.hold(event) is not None:
                # Waiting for a window (or midnight) is not running: not in the heartbeat's list meanwhile.
                waited = self.schedule.wait(event)
                if await self._off_slot(event, _done(waited), "the download schedule", parked=False) is None:
                    return
            key = f"{event.job_id}/{event.item_id}"
            self.running[key] = {"job_id": event.job_id, "item_id": event.item_id, "priority": priority}
            try:
                gated = self.gate is not None and not self.gate.free(event)
                release = await self._off_slot(event, self.gate(event), "its site") if gated else None  # type: ignore[misc]
                if gated and release is None:
                    return
                # The download tells a paced site's turn when its first bytes come (sites.PacedTurn).
                current_turn.set(release if isinstance(release, PacedTurn) else None)
                try:
                    await self.work(event, attempt)
                except HandedBack:
                    # Paused: a new ticket takes this one's place (and the run), this one is settled. Published
                    # first, then the run moved to it: a crash in between leaves this ticket to be redelivered.
                    new_seq = await self.dispatcher.reissue(msg.subject, event, dict(msg.headers or {}), seq)
                    await self.markers.move(event, seq, new_seq)
                finally:
                    if release is not None:
                        await release()
            finally:
                self.running.pop(key, None)

        await handle(
            Delivery(msg),  # type: ignore[arg-type]
            work,
            dead_letters=DeadLetters(self.js, TICKET_DURABLES[priority]),
            ack_wait=self.ack_wait,
            consumer=TICKET_DURABLES[priority],
        )

    async def _purge_tickets(self, job_id: str) -> None:
        """A cancelled job's tickets are all no-ops (its `cancel.requested` skipped its waiting items): removed from
        the queue at once, not taken one by one. Taking the 10,000 tickets of a cancelled playlist held a job queued
        behind them for 21 s (tests/e2e/test_hardening.py); a purge by subject takes milliseconds."""
        if job_id in self._purged:
            return
        self._purged[job_id] = None
        while len(self._purged) > PURGED_REMEMBERED:
            self._purged.popitem(last=False)
        try:
            await self.js.purge_stream(WORK_STREAM, subject=f"{WORK_PREFIX}.*.{job_id}")
        except Exception as exc:  # the tickets are then taken one by one, as no-ops
            log.warning("could not purge the tickets of cancelled job %s: %s", job_id, exc)

    def snapshot(self) -> dict:
        return {
            "worker": self.worker,
            "slots": self.concurrency,
            "running": [
                {**entry, **self.schedule.describe(key)} if self.schedule is not None else entry
                for key, entry in self.running.items()
            ],
            "paused": self.state.paused,
            "at": utcnow().isoformat(),
            "engine": self.engine() if self.engine is not None else None,
        }

    async def _heartbeat(self, workers: KeyValue, stop: asyncio.Event) -> None:
        key = worker_key(self.worker)
        while not stop.is_set():
            try:
                await workers.put(key, json.dumps(self.snapshot()).encode())
            except Exception as exc:  # NATS away for a moment: the next beat tries again
                log.debug("heartbeat: %s", exc)
            # Every HEARTBEAT, and at once when this process's downloads under the schedule's budget change.
            woken = self.schedule.beat_now if self.schedule is not None else asyncio.Event()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(either(stop, woken), HEARTBEAT)
            woken.clear()
        with contextlib.suppress(Exception):
            await workers.delete(key)


async def _done(wait: Awaitable[None]) -> bool:
    """True once ``wait`` is over (a gate without a release to hand back)."""
    await wait
    return True


async def _first(work: Awaitable, stop: asyncio.Event) -> bool:
    """Await ``work`` unless ``stop`` comes first (then False)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if task.done():
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False
