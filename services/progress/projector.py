"""The progress projector: folds every event of the stream into its job's view in the KV bucket.

Each view carries ``seq``, the last stream sequence folded into it, so a redelivered event is skipped by the fold.
A view is stored as a summary and pages of items (``runtime.nats.views``); only the pages that changed are written,
compare-and-set, the value from the newer view winning a conflict with another replica (``store``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from typing import Awaitable, Callable, Iterable

from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from contracts.events import Envelope
from contracts.fold import apply_or_set_aside
from contracts.ids import is_job_id
from contracts.views import VIEW_TOO_LARGE, JobView
from services.progress.limits import is_cut
from services.progress.store import ViewStore, Written
from services.runtime.metrics import EVENT_LAG, EVENTS_FOLDED, freeze_startup_objects
from services.runtime.nats import NATS_AWAY, InOrderReader, StoredEvent, decode, stream_seq

log = logging.getLogger("tubeflow.progress")

DURABLE_PREFIX = "progress-v1"


def durable_name(replica: str) -> str:
    """Each projector replica reads the whole stream in order through its own durable consumer.

    Sharing one consumer would split a job's events between replicas, and a replica folding a later event first
    would make the other skip an earlier one. With the whole stream each, a replica that is behind finds the
    view already past its event (the other applied it, in order) and skips it; compare-and-set settles the races.
    """
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in replica)
    return f"{DURABLE_PREFIX}-{safe}"[:200]


def write_delay(items: int) -> float:
    """How long the projector may hold a folded view before writing it.

    A write puts the job's summary and its changed pages of items, and every API process receives them; writing a
    1,000-item job for each of its ~15,000 events cost more than the downloads (docs/benchmarks.md, when a write was
    the whole view), and a page of 100 items still changes many times a second while they download.
    Views of up to ``SMALL_VIEW`` items are written at once, bigger ones at most every 0.25 ms per item, never more
    than ``MAX_WRITE_DELAY`` apart: a big playlist's bar moves a few times a second instead of on every event.
    """
    if items <= SMALL_VIEW:
        return 0.0
    return min(MAX_WRITE_DELAY, items * 0.00025)


SMALL_VIEW = 100
MAX_WRITE_DELAY = 0.25


class Projector:
    """Folds batches of events into views held in memory (``fold``) and writes the changed ones (``flush``)."""

    def __init__(
        self,
        kv: KeyValue,
        *,
        cache_size: int = 4096,
        max_payload: int | None = None,
        on_cut: Callable[[str, list[Envelope], str], Awaitable[None]] | None = None,
        refold: Callable[[str], Awaitable[JobView | None]] | None = None,
        on_set_aside: Callable[[Envelope, str], Awaitable[None]] | None = None,
    ) -> None:
        self._store = ViewStore(kv, max_payload=max_payload, refold=refold)
        # ``on_cut`` hears of a view cut because it would not fit in a message (the dead-letter stream, a cancel).
        self._on_cut = on_cut
        # ``on_set_aside`` hears of an event the fold could not apply (the dead-letter stream); the fold goes on.
        self._on_set_aside = on_set_aside
        self._cache: OrderedDict[str, tuple[JobView | None, Written]] = OrderedDict()
        self._cache_size = cache_size
        # Jobs folded since their last write, with the events that were folded.
        self._dirty: dict[str, list[Envelope]] = {}
        self.applied = 0
        self.skipped = 0

    @property
    def conflicts(self) -> int:
        return self._store.conflicts

    async def _load(self, job_id: str) -> tuple[JobView | None, Written]:
        cached = self._cache.get(job_id)
        if cached is not None:
            self._cache.move_to_end(job_id)
            return cached
        return await self._store.read(job_id)

    def _remember(self, job_id: str, view: JobView, written: Written) -> None:
        self._cache[job_id] = (view, written)
        self._cache.move_to_end(job_id)
        for _ in range(len(self._cache)):
            if len(self._cache) <= self._cache_size:
                break
            oldest = next(iter(self._cache))
            if oldest in self._dirty:  # not written yet: it must stay
                self._cache.move_to_end(oldest)
                continue
            del self._cache[oldest]

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def write_delay(self) -> float:
        """How long the views folded but not written may wait (the biggest one decides)."""
        views = (self._cache[job][0] for job in self._dirty)
        return max(
            (write_delay(max(len(view.items), view.item_count or 0)) for view in views if view is not None), default=0.0
        )

    def forget(self) -> None:
        """Drop everything folded and not written (the events will be read again)."""
        for job_id in self._dirty:
            self._cache.pop(job_id, None)
        self._dirty.clear()

    async def project(self, stored: Iterable[StoredEvent]) -> set[str]:
        """Fold a batch of stored events and write every changed view. Returns the changed job ids."""
        await self.fold(stored)
        return await self.flush()

    async def fold(self, stored: Iterable[StoredEvent]) -> None:
        """Fold a batch into the views in memory; the changed ones are written by ``flush``."""
        by_job: dict[str, list[Envelope]] = {}
        for item in stored:
            if item.event is None:
                log.error("skipping unreadable event at seq %s on %s: %s", item.seq, item.subject, item.error)
                self.skipped += 1
                continue
            by_job.setdefault(item.event.job_id, []).append(item.event)
        for job_id, events in by_job.items():
            if not is_job_id(job_id):  # checked once per job of the batch
                log.error(
                    "skipping %d event(s) from seq %s with a malformed job id %r", len(events), events[0].seq, job_id
                )
                self.skipped += len(events)
                continue
            view, written = await self._load(job_id)
            if is_cut(view):
                self.skipped += len(events)
                continue
            new = view
            for event in events:
                new, set_aside = apply_or_set_aside(new, event)
                if set_aside is not None:
                    log.error("job %s: event at seq %s set aside, the fold raised %s", job_id, event.seq, set_aside)
                    self.skipped += 1
                    if self._on_set_aside is not None:
                        await self._on_set_aside(event, set_aside)
            if new is view or new is None:
                continue
            self._dirty.setdefault(job_id, []).extend(events)
            self._remember(job_id, new, written)

    async def flush(self) -> set[str]:
        """Write every view folded since its last write, compare-and-set. Returns the job ids written."""
        # Jobs are written in the order of their last event, so readers see views appear in stream order.
        order = sorted(self._dirty, key=lambda job: self._dirty[job][-1].seq)
        written = set()
        for job_id in order:
            if await self._save(job_id, self._dirty[job_id]):
                written.add(job_id)
            del self._dirty[job_id]
        return written

    async def _save(self, job_id: str, events: list[Envelope]) -> bool:
        view, written = self._cache[job_id]
        assert view is not None
        try:
            view, written, cut_from = await self._store.write(view, written)
        except BaseException:
            self._cache.pop(job_id, None)
            raise
        self.applied += len(events)
        self._remember(job_id, view, written)
        if cut_from is not None:
            log.error(
                "job %s: a part of its view was %d bytes; cut, the job failed (%s)", job_id, cut_from, VIEW_TOO_LARGE
            )
            if self._on_cut is not None:
                await self._on_cut(job_id, events, view.error.message if view.error else VIEW_TOO_LARGE)
        return True


async def project_stream(projector: Projector, reader: InOrderReader, stop: asyncio.Event) -> None:
    """Fold the stream into the read models until ``stop``: batches in order, views written (held a little for big
    jobs, see ``write_delay``), then one ack for everything written."""
    await reader.open()
    freeze_startup_objects()
    loop = asyncio.get_running_loop()
    unacked: list[Msg] = []  # folded, waiting for their views to be written: [first, last]
    folded = 0  # how many events that is
    flush_at: float | None = None

    async def write_and_ack() -> None:
        nonlocal unacked, folded, flush_at
        await projector.flush()
        # One ack settles everything up to the last folded event: its views are written.
        await unacked[-1].ack()
        EVENTS_FOLDED.inc(folded)
        EVENT_LAG.set(unacked[-1].metadata.num_pending)
        unacked, folded, flush_at = [], 0, None

    try:
        while not stop.is_set():
            wait = 1.0 if flush_at is None else max(0.0, flush_at - loop.time())
            try:
                msgs = await reader.next(wait)
            except Exception as exc:
                log.warning("fetch failed: %s", exc)
                await asyncio.sleep(0.5)
                projector.forget()
                unacked, folded, flush_at = [], 0, None
                with contextlib.suppress(Exception):
                    await reader.open()
                continue
            try:
                if msgs:
                    await projector.fold([decode(stream_seq(m), m.subject, m.data) for m in msgs])
                    unacked = [unacked[0] if unacked else msgs[0], msgs[-1]]
                    folded += len(msgs)
                    if flush_at is None:
                        flush_at = loop.time() + projector.write_delay()
                if unacked and (flush_at is None or loop.time() >= flush_at):
                    await write_and_ack()
            except Exception as exc:
                # Nothing is lost: the reader starts again at the first unacked event, and the fold skips what it
                # already has.
                first = stream_seq(unacked[0]) if unacked else stream_seq(msgs[0]) if msgs else None
                if isinstance(exc, NATS_AWAY):  # a node lost, a leader being elected: not a bug, no traceback
                    log.warning("NATS did not answer (%s); reading again from seq %s", type(exc).__name__, first)
                else:
                    log.exception("projecting failed; reading again from seq %s", first)
                projector.forget()
                unacked, folded, flush_at = [], 0, None
                await asyncio.sleep(1.0)
                with contextlib.suppress(Exception):
                    await reader.open(first)
        if unacked:
            # Stopping: write what was folded (were this to fail, the events are read again at the next start).
            with contextlib.suppress(Exception):
                await write_and_ack()
    finally:
        await reader.close()
