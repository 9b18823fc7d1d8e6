"""The download queue: `item.queued` facts become tickets on the work stream, one subject per priority, and free
workers take the highest waiting ticket (``runtime.nats.priority``).

- A job created with ``start: false`` resolves, but its items get no ticket until `start.requested`.
- `priority.changed` issues the job's waiting items new tickets at the new priority; a ticket of an older priority is
  dropped when a worker takes it (its header says which `priority.changed` it was issued under).
- While the queue is paused (`paused` in the queue bucket) no worker takes a ticket; ``now`` also stops the running
  downloads, which keep their partial files and go back to the queue.
- A ticket issued twice for one item (a start or a priority change racing the item's first ticket) runs once: the
  first to take it holds a run marker in the claims bucket, keyed by item and round, with the ticket's sequence.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from contracts import events as ev
from contracts.fold import fold
from contracts.subjects import subject
from services.runtime.nats import STREAM, ConsumerSpec, read_job_events
from services.runtime.nats.publish import publish_once
from services.runtime.nats.topology import PAUSED_KEY, TICKET_DURABLES, WORK_PREFIX, WORK_STREAM
from services.runtime.tracing import inject

log = logging.getLogger("tubeflow.queue")

TICKETS = tuple(
    ConsumerSpec(
        "item.queued",
        TICKET_DURABLES[priority],
        max_ack_pending=4096,
        stream=WORK_STREAM,
        subject=f"{WORK_PREFIX}.{priority}.>",
    )
    for priority in ev.PRIORITIES
)
START = ConsumerSpec("start.requested", "downloader-start-v1", max_ack_pending=64)
REPRIORITIZE = ConsumerSpec("priority.changed", "downloader-priority-v1", max_ack_pending=64)
PRIORITY_SEQ = "Tubeflow-Priority-Seq"


def ticket_subject(priority: str, job_id: str) -> str:
    return f"{WORK_PREFIX}.{priority}.{job_id}"


@dataclass(frozen=True)
class Controls:
    """What the job's commands say now: held or not, its priority, and the sequence of the `priority.changed` that set
    it (0: the priority the job was created with)."""

    held: bool
    priority: str
    priority_seq: int


@dataclass
class Dispatcher:
    js: JetStreamContext
    # Whether this process has heard the job was cancelled (no lookup: this runs once per item queued).
    cancelled: Callable[[str], bool] = lambda job_id: False

    async def _last(self, job_id: str, event_type: str) -> ev.Envelope | None:
        try:
            raw = await self.js.get_last_msg(STREAM, subject(job_id, event_type), direct=True)
        except NotFoundError:
            return None
        return ev.parse_event(raw.data or b"", seq=raw.seq or 0)

    async def controls(self, job_id: str, held: bool, priority: str) -> Controls:
        """The job's hold and priority: as queued, unless a later command changed them."""
        if held and await self._last(job_id, "start.requested") is not None:
            held = False
        changed = await self._last(job_id, "priority.changed")
        if isinstance(changed, ev.PriorityChangedEvent):
            return Controls(held, changed.data.priority, changed.seq)
        return Controls(held, priority, 0)

    async def dispatch(self, event: ev.ItemQueuedEvent, attempt: int = 1) -> None:
        """`item.queued` -> a ticket at the job's priority, unless the job is held or cancelled (its waiting items are
        skipped already: a cancelled 10,000-item playlist would queue 10,000 no-ops ahead of the next job)."""
        if self.cancelled(event.job_id):
            return
        controls = await self.controls(event.job_id, event.data.held, event.data.priority)
        if controls.held:
            return
        await self._ticket(event, controls)

    async def _ticket(self, event: ev.ItemQueuedEvent, controls: Controls) -> None:
        headers = {
            # One ticket per item, run and priority change: a repeat (a redelivered dispatch, a start racing the
            # item's first ticket) is dropped by the server within the duplicate window.
            "Nats-Msg-Id": f"ticket:{event.event_id}:{controls.priority}:{controls.priority_seq}",
            PRIORITY_SEQ: str(controls.priority_seq),
        }
        inject(headers)  # the item's trace goes on through its ticket
        await publish_once(
            self.js, ticket_subject(controls.priority, event.job_id), ev.encode_event(event), stream=WORK_STREAM,
            headers=headers,
        )  # fmt: skip

    async def reissue(self, subject_: str, event: ev.ItemQueuedEvent, headers: dict[str, str], old_seq: int) -> int:
        """A new ticket in place of ``old_seq`` (same subject, data and priority), for work handed back by a pause:
        at the end of its priority's queue, with a delivery count of its own. Returns its stream sequence."""
        out = {PRIORITY_SEQ: headers.get(PRIORITY_SEQ, "0"), "Nats-Msg-Id": f"ticket:{event.event_id}:after:{old_seq}"}
        inject(out)
        ack = await publish_once(self.js, subject_, ev.encode_event(event), stream=WORK_STREAM, headers=out)
        return ack.seq

    async def redispatch(self, event: ev.Envelope, attempt: int = 1) -> None:
        """`start.requested` or `priority.changed`: tickets for the job's items that have not started, at the job's
        priority now. Decided from the job's events (not the read models, which may not have folded the items yet)."""
        events = [stored.event for stored in await read_job_events(self.js, event.job_id)]
        view = fold(events)
        if view is None or view.terminal or view.deleted_at is not None:
            return
        queued = _latest_queued(events)
        first = queued[0].data if queued else None
        controls = await self.controls(event.job_id, view.held, first.priority if first else view.priority)
        if controls.held:
            return
        waiting = {item.id for item in view.items if item.status == "queued"}
        for item in queued:
            if item.item_id in waiting:
                await self._ticket(item, controls)
        log.info("job %s: %d waiting item(s) ticketed at %s", event.job_id, len(waiting), controls.priority)


def _latest_queued(events: list[ev.Envelope]) -> list[ev.ItemQueuedEvent]:
    """Each item's `item.queued` of its latest round."""
    latest: dict[str, ev.ItemQueuedEvent] = {}
    for event in events:
        if isinstance(event, ev.ItemQueuedEvent) and event.item_id is not None:
            old = latest.get(event.item_id)
            if old is None or old.data.round <= event.data.round:
                latest[event.item_id] = event
    return list(latest.values())


class RunMarkers:
    """At most one ticket of an item's run runs: the first to take it marks it with the ticket's stream sequence (a
    redelivery of the same ticket goes on; another ticket of the same run is dropped). Markers expire with the claims
    bucket's TTL; a second ticket taken later than that runs, and finds the file in the media catalog."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def take(self, event: ev.ItemQueuedEvent, ticket_seq: int) -> bool:
        key = f"run.{event.job_id}.{event.item_id}.{event.data.round}"
        try:
            await self._kv.create(key, str(ticket_seq).encode())
            return True
        except KeyWrongLastSequenceError:
            pass
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return await self.take(event, ticket_seq)
        return (entry.value or b"").decode() == str(ticket_seq)

    async def move(self, event: ev.ItemQueuedEvent, old_seq: int, new_seq: int) -> bool:
        """The run goes on from ticket ``new_seq`` instead of ``old_seq`` (compare-and-set: only from the ticket that
        holds it). False when another ticket holds the run."""
        key = f"run.{event.job_id}.{event.item_id}.{event.data.round}"
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return await self.take(event, new_seq)
        if (entry.value or b"").decode() != str(old_seq):
            return False
        try:
            await self._kv.update(key, str(new_seq).encode(), last=entry.revision)
        except KeyWrongLastSequenceError:
            return False
        return True


class QueueState:
    """The queue's `paused` flag as this process sees it (a KV watch), and who waits for it to change."""

    def __init__(self) -> None:
        self.paused = False
        self.now = False
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._listeners: list[Callable[[bool], None]] = []

    def on_pause_now(self, listener: Callable[[bool], None]) -> None:
        self._listeners.append(listener)

    def set(self, paused: bool, now: bool = False) -> None:
        was = self.paused
        self.paused, self.now = paused, now
        if paused:
            self._resumed.clear()
            if now and not was:
                for listener in self._listeners:
                    listener(True)
        else:
            self._resumed.set()
        if was != paused:
            log.info("queue %s", "paused" + (" (running items stopped)" if now else "") if paused else "resumed")

    async def wait_resumed(self) -> None:
        await self._resumed.wait()

    async def follow(self, kv: KeyValue, stop: asyncio.Event) -> None:
        """Keep ``paused`` in step with the queue bucket until ``stop``."""
        watcher = await kv.watch(PAUSED_KEY)
        try:
            while not stop.is_set():
                try:
                    entry = await watcher.updates(timeout=5.0)
                except asyncio.TimeoutError:
                    continue
                except Exception as exc:  # NATS away for a moment: the watch resumes by itself
                    log.debug("queue watch: %s", exc)
                    await asyncio.sleep(1.0)
                    continue
                if entry is None:
                    continue
                state = decode_paused(entry.value)
                self.set(bool(state.get("paused")), bool(state.get("now")))
        finally:
            try:
                await watcher.stop()
            except Exception as exc:
                log.debug("queue watch stop: %s", exc)


def decode_paused(value: bytes | None) -> dict:
    try:
        state = json.loads(value or b"{}")
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


Work = Callable[[ev.ItemQueuedEvent, int], Awaitable[None]]
