"""The download schedule in a downloader process (issue 29): windows, one bandwidth budget over every downloader,
daily caps.

- **Windows.** Outside every window (with ``outside: wait``) an item waits before its download (`download.waiting`,
  code `outside_window`, until the next opening) without holding a download slot; at a window's end the downloads
  the schedule holds stop the way ``pause?now=true`` stops them (their partial files stay; the next window resumes
  them with Range), unless ``running_at_window_end`` is finish. A live recording is never cut; a job that asked
  ``schedule: ignore`` is not held at all.
- **Budget.** ``rate`` (``slow_rate`` outside the windows with ``outside: slow``) is shared by the downloads running
  in every process: each process says in its heartbeat (the workers bucket, which every process watches) how many
  it runs under the budget, and each download gets the budget over their total, changed while it runs (the slot
  process reads it per block, see ``slot_process``).
- **Caps.** What each download receives is added per site to the day's usage in the queue bucket (compare-and-set,
  about once a second). An item waits (code `daily_cap`, until local midnight) while today's bytes have reached a
  cap that holds for it, or would pass it with the item's size; a running download stops when its size is known to
  pass the cap (counting the downloads that began before it) or when the bytes reach it, and resumes after midnight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription
from nats.js.kv import KeyValue

from contracts import events as ev
from contracts.schedule import DayUsage, Schedule, WindowState, cap_key, human_bytes, local_time
from services.runtime.cancellation import CancelToken
from services.runtime.clock import utcnow
from services.runtime.nats.kv import read_bucket, watch_bucket
from services.runtime.nats.topology import QUEUE_BUCKET, WORKERS_BUCKET
from services.runtime.schedule import SCHEDULE_KEY, add_usage, decode_record, read_usage
from services.runtime.sitelimits import site_of
from services.runtime.tasks import either

log = logging.getLogger("tubeflow.schedule")

# How often running downloads are held to the window and the caps, and the day's bytes are shared.
TICK = 0.5
# A waiting item looks again at least this often (a cap may be freed by a changed schedule, another process...).
LOOK = 5.0
# Items waiting for the schedule in one process at most; past that, the process takes no more tickets.
MAX_HELD = 256
Hold = tuple[str, str, "datetime | None"]


def ignores(event: ev.ItemQueuedEvent) -> bool:
    options = event.data.options
    return options is not None and options.schedule == "ignore"


@dataclass
class Transfer:
    """One running download as the schedule sees it; ``saw`` runs on yt-dlp's thread with each forwarded report."""

    key: str
    site: str
    token: CancelToken
    held: bool  # the schedule holds it (not `schedule: ignore`)
    since: float = field(default_factory=time.time)
    live: bool = False
    received: int = 0  # bytes received over the network by this run (not those resumed from a partial file)
    counted: int = 0  # of those, added to the day's usage
    downloaded: int = 0
    total: int | None = None
    # Called (on yt-dlp's thread) when the download's size becomes known: the caps are looked at then, not a tick later.
    on_size: Callable[[], None] | None = None

    def saw(self, d: dict[str, Any]) -> None:
        status = d.get("status")
        if status == "recording":
            self.live = True
        received = d.get("received_bytes")
        if received is not None:
            self.received = max(self.received, int(received))
        if status in ("downloading", "finished"):
            self.downloaded = int(d.get("downloaded_bytes") or 0)
            total = d.get("total_bytes")
            if total:
                known, self.total = self.total, int(total)
                if known is None and self.on_size is not None:
                    self.on_size()

    @property
    def budgeted(self) -> bool:
        return self.held and not self.live

    @property
    def remaining(self) -> int:
        return max(self.total - self.downloaded, 0) if self.total else 0

    @property
    def size(self) -> int:
        """What this run will have received when done: its bytes to come and those so far (as far as known)."""
        return self.received + self.remaining


@dataclass
class ScheduleGate:
    queue_kv: KeyValue
    worker_key: str
    announce: Callable[[ev.ItemQueuedEvent, str, str, datetime | None], Awaitable[None]]
    # How far the clock the schedule reads is moved (TUBEFLOW_CLOCK_OFFSET, tests); real instants are said to people.
    offset: timedelta = timedelta()
    schedule: Schedule | None = None
    transfers: dict[str, Transfer] = field(default_factory=dict)
    # Told when this process's budgeted downloads change (its heartbeat goes out at once).
    beat_now: asyncio.Event = field(default_factory=asyncio.Event)
    held: int = 0
    _usage: DayUsage = field(default_factory=DayUsage)
    _usage_day: date | None = None
    _pending: dict[str, int] = field(default_factory=dict)
    _others: dict[str, list[dict]] = field(default_factory=dict)
    _needs: dict[str, int] = field(default_factory=dict)
    _stopped: dict[str, Hold] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _window: WindowState | None = None
    _poke: asyncio.Event = field(default_factory=asyncio.Event)
    _subs: list[Subscription] = field(default_factory=list)

    # --- following the schedule and the other processes -------------------------------------------------------

    def set_schedule(self, schedule: Schedule | None) -> None:
        if schedule != self.schedule:
            log.info("download schedule: %s", schedule.model_dump_json() if schedule is not None else "none")
        self.schedule = schedule
        self._window = None
        self._wake()
        if schedule is not None and self.transfers:
            self.beat_now.set()  # the others learn of this process's running downloads under it at once

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def others_saw(self, key: str, value: bytes | None) -> None:
        """A heartbeat of another process (None: it is gone): what it runs under the budget."""
        if key == self.worker_key:
            return
        if value is None:
            self._others.pop(key, None)
            return
        try:
            running = json.loads(value).get("running") or []
        except (ValueError, AttributeError):
            running = []
        self._others[key] = [r for r in running if isinstance(r, dict) and r.get("scheduled")]

    async def start(self, nc: NATS, workers_kv: KeyValue) -> "ScheduleGate":
        """Follow the schedule key and the other processes' heartbeats (their buckets' messages, read once first)."""
        self._subs = [
            await watch_bucket(
                nc,
                QUEUE_BUCKET,
                on_put=lambda _key, value: self._schedule_from(value),
                on_delete=lambda _key: self._schedule_from(None),
                keys=SCHEDULE_KEY,
            ),
            await watch_bucket(
                nc, WORKERS_BUCKET, on_put=self.others_saw, on_delete=lambda key: self.others_saw(key, None)
            ),
        ]
        self._schedule_from((await read_bucket(self.queue_kv, SCHEDULE_KEY)).get(SCHEDULE_KEY))
        for key, value in (await read_bucket(workers_kv)).items():
            self.others_saw(key, value)
        return self

    async def run(self, stop: asyncio.Event) -> None:
        """Hold running downloads to the window and the caps, and share today's bytes, until ``stop``."""
        try:
            while not stop.is_set():
                try:
                    await self.tick()
                except Exception as exc:  # NATS away for a moment: the next tick tries again
                    log.debug("schedule tick: %s", exc)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(either(stop, self._poke), TICK)
                self._poke.clear()
            with contextlib.suppress(Exception):
                await self._share_usage()
        finally:
            for sub in self._subs:
                with contextlib.suppress(Exception):  # closing anyway
                    await sub.unsubscribe()

    def _schedule_from(self, value: bytes | None) -> None:
        self.set_schedule(decode_record(value).schedule if value else None)

    # --- the window -----------------------------------------------------------------------------------------------

    def window(self) -> WindowState:
        now = self.now()
        if self.schedule is None:
            return WindowState(True, None)
        if self._window is None or (self._window.until is not None and now >= self._window.until):
            self._window = self.schedule.window(now)
        return self._window

    def now(self) -> datetime:
        """The clock the schedule reads."""
        return utcnow() + self.offset

    def _real(self, at: datetime | None) -> datetime | None:
        """An instant of the schedule's clock as a real one (they differ under TUBEFLOW_CLOCK_OFFSET)."""
        return None if at is None else at - self.offset

    # --- waiting before a download ------------------------------------------------------------------------------

    def hold(self, event: ev.ItemQueuedEvent) -> Hold | None:
        """Why the item may not start now (code, message, until), or None."""
        schedule = self.schedule
        if schedule is None or ignores(event):
            return None
        window = self.window()
        if not window.open and schedule.outside == "wait":
            when = local_time(schedule, window.until, self.now()) if window.until else None
            message = "outside the download window" + (f": starts at {when} ({schedule.timezone})" if when else "")
            return "outside_window", message, self._real(window.until)
        full = self._cap_full(site_of(event.data.url), self._needs.get(_key(event), 0))
        if full is not None:
            return "daily_cap", full, self._real(schedule.next_midnight(self.now()))
        return None

    async def wait(self, event: ev.ItemQueuedEvent) -> None:
        """Until the schedule lets the item start, saying why it waits (once per reason and start time)."""
        said: set[tuple[str, datetime | None]] = set()
        self.held += 1
        try:
            while (why := self.hold(event)) is not None:
                code, message, until = why
                if (code, until) not in said:
                    log.info("item %s of job %s waits: %s", event.item_id, event.job_id, message)
                    await self.announce(event, code, message, until)
                    said.add((code, until))
                pause = LOOK if until is None else (until - utcnow()).total_seconds()
                changed = self._changed
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), min(max(pause, 0.01), LOOK))
        finally:
            self.held -= 1
        self._needs.pop(_key(event), None)

    # --- running downloads --------------------------------------------------------------------------------------

    def begin(self, event: ev.ItemQueuedEvent, token: CancelToken) -> Transfer:
        transfer = Transfer(_key(event), site_of(event.data.url), token, held=not ignores(event))
        loop = asyncio.get_running_loop()
        transfer.on_size = lambda: loop.call_soon_threadsafe(self._poke.set)
        self.transfers[transfer.key] = transfer
        self._stopped.pop(transfer.key, None)
        self._beat_if_scheduled()
        return transfer

    def end(self, transfer: Transfer) -> None:
        self._count(transfer)
        if self.transfers.get(transfer.key) is transfer:
            del self.transfers[transfer.key]
        self._beat_if_scheduled()

    def _beat_if_scheduled(self) -> None:
        """Under a schedule the other processes share the budget and the caps by this process's running downloads:
        its heartbeat goes out as soon as they change. Without one, the heartbeat keeps its pace (every HEARTBEAT s)
        rather than two more per item, each a KV write that every API and downloader process reads (364 beats for
        103 small jobs, counted in a profile; 7 at the pace)."""
        if self.schedule is not None:
            self.beat_now.set()

    def stopped(self, key: str) -> Hold | None:
        """Why the schedule stopped the item's download (its token's reason is "schedule"); asked once."""
        return self._stopped.pop(key, None)

    def rate(self, transfer: Transfer) -> float | None:
        """Bytes a second this download may take now (None: as fast as it goes)."""
        if self.schedule is None or not transfer.budgeted:
            return None
        budget = self.schedule.budget(self.window().open)
        if budget is None:
            return None
        here = sum(1 for t in self.transfers.values() if t.budgeted)
        there = sum(len(running) for running in self._others.values())
        return budget / max(here + there, 1)

    def in_force(self) -> bool:
        """A schedule is in force: its downloads read in small blocks, so that a budget paces them evenly and a
        window's end or a cap stops them within moments (a block read at a slow site's pace can take seconds)."""
        return self.schedule is not None

    def describe(self, key: str) -> dict:
        """What the heartbeat says of a running item: under the budget, its site, and its bytes still to come."""
        transfer = self.transfers.get(key)
        if transfer is None or not transfer.budgeted or self.schedule is None:
            return {}
        return {
            "scheduled": True,
            "site": transfer.site,
            "since": transfer.since,
            "size": transfer.size,
            "counted": transfer.counted,
        }

    async def tick(self) -> None:
        """Share today's bytes, then hold the running downloads to the window and the caps."""
        schedule = self.schedule
        for transfer in list(self.transfers.values()):
            self._count(transfer)
        if self._pending or (schedule is not None and (schedule.daily_cap or schedule.site_caps)):
            await self._share_usage()
        self.enforce()

    def enforce(self) -> None:
        """Stop what the schedule says must stop now: at a window's end (``running_at_window_end`` pause), the
        downloads it holds; at a cap, the download that passes it (a live recording never)."""
        schedule = self.schedule
        if schedule is None:
            return
        window = self.window()
        cut = not window.open and schedule.outside == "wait" and schedule.running_at_window_end == "pause"
        for transfer in list(self.transfers.values()):
            if not transfer.held or transfer.live or transfer.token.reason is not None:
                continue
            if cut:
                until = self._real(window.until)
                when = local_time(schedule, window.until, self.now()) if window.until else None
                self._stop(
                    transfer,
                    (
                        "outside_window",
                        "the download window closed" + (f"; it goes on at {when}" if when else ""),
                        until,
                    ),
                )
                continue
            full = self._cap_full(transfer.site, transfer.size, running=transfer)
            if full is not None:
                self._needs[transfer.key] = transfer.remaining
                self._stop(transfer, ("daily_cap", full, self._real(schedule.next_midnight(self.now()))))

    def _stop(self, transfer: Transfer, why: Hold) -> None:
        log.info("download of %s stops: %s", transfer.key, why[1])
        self._stopped[transfer.key] = why
        transfer.token.trip("schedule")

    # --- today's bytes ------------------------------------------------------------------------------------------

    def _count(self, transfer: Transfer) -> None:
        new = transfer.received - transfer.counted
        if new > 0:
            transfer.counted += new
            self._pending[transfer.site] = self._pending.get(transfer.site, 0) + new

    def _day(self) -> date:
        return self.schedule.day(self.now()) if self.schedule is not None else self.now().date()

    async def _share_usage(self) -> None:
        day = self._day()
        if day != self._usage_day:
            self._usage, self._usage_day = DayUsage(), day
            self._wake()  # a new day: items waiting for a cap may go
        pending, self._pending = self._pending, {}
        try:
            self._usage = (
                await add_usage(self.queue_kv, day, pending) if pending else await read_usage(self.queue_kv, day)
            )
        except Exception:
            for site, n in pending.items():  # tried again on the next tick
                self._pending[site] = self._pending.get(site, 0) + n
            raise

    def usage(self) -> DayUsage:
        return self._usage if self._usage_day == self._day() else DayUsage()

    def _cap_full(self, site: str, need: int, running: Transfer | None = None) -> str | None:
        """The cap an item of ``site`` would pass (a message), or None.

        Today's bytes are split into those of downloads that ended (``base``) and the running ones. An item not
        started yet counts every running download's size (its bytes so far and to come, as far as known) and
        ``need`` (what it is known to lack, 0 when unknown: then it waits only once a cap is reached). A running one
        (``running``, with ``need`` its size) counts only the downloads that began before it, so of several that
        together would pass a cap the later ones stop, not all of them."""
        assert self.schedule is not None
        total_cap, site_caps = self.schedule.caps()
        if total_cap is None and not site_caps:
            return None
        # (site, size, counted) of every running download under the schedule, here and in the other processes.
        rows = [(t.site, t.size, t.counted, t.since, t is running) for t in self.transfers.values() if t.budgeted]
        for entries in self._others.values():
            for r in entries:
                rows.append(
                    (
                        str(r.get("site")),
                        int(r.get("size") or 0),
                        int(r.get("counted") or 0),
                        float(r.get("since") or 0),
                        False,
                    )
                )
        usage = self.usage()
        mine = running.since if running is not None else None
        ahead = [row for row in rows if not row[4] and (mine is None or row[3] < mine)]

        def over(cap: int, used: int, counted: int, sizes: int, what: str) -> str | None:
            base = used - counted  # bytes of downloads that ended today
            committed = base + sizes + need
            if (committed > cap) if need else (committed >= cap):
                so_far = base + sum(r[2] for r in rows)
                more = f"; this one needs {human_bytes(need)} more" if need and running is None else ""
                return f"daily cap{what} reached: {human_bytes(so_far)} of {human_bytes(cap)} today{more}"
            return None

        pending = self._pending
        if total_cap is not None:
            full = over(
                total_cap,
                usage.total + sum(pending.values()),
                sum(r[2] for r in rows),
                sum(r[1] for r in ahead),
                "",
            )
            if full is not None:
                return full
        key = cap_key(site, site_caps)
        if key is None:
            return None
        covered = [r for r in rows if cap_key(r[0], site_caps) == key]
        return over(
            site_caps[key],
            usage.of(key, site_caps) + sum(n for s, n in pending.items() if cap_key(s, site_caps) == key),
            sum(r[2] for r in covered),
            sum(r[1] for r in ahead if cap_key(r[0], site_caps) == key),
            f" of {key}",
        )


def _key(event: ev.ItemQueuedEvent) -> str:
    return f"{event.job_id}/{event.item_id}"
