"""One subscription per API process to the read-model bucket, fanned out in memory.

The hub follows the projector's writes to the read-model bucket through one core subscription (no server-side
consumer at all, see ``watch_bucket``), keeps the summaries that ``GET /api/jobs`` lists, and wakes the SSE
clients watching a job. 1,000 SSE clients cost 1,000 asyncio events, not 1,000 NATS consumers.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue
from pydantic import ValidationError

from contracts.views import JobSummary, JobView
from services.api.search import JobIndex
from services.runtime.nats import JOBS_BUCKET, read_bucket, watch_bucket
from services.runtime.nats.views import SUMMARY_KEYS, item_pages, load, parse_key, split_page, view_bytes

log = logging.getLogger("tubeflow.api.hub")


class Snapshot:
    """One stored version of a job's view, parsed only when somebody needs the items.

    A view is stored as a summary and pages of items (``runtime.nats.views``); the hub only needs the summary, and an
    SSE client that wakes after several updates needs only the newest view. The parse is shared by every client of
    the job.
    """

    __slots__ = ("seq", "_data", "_pages", "_view")

    def __init__(
        self, seq: int, *, data: bytes | None = None, pages: JobPages | None = None, view: JobView | None = None
    ) -> None:
        self.seq = seq
        self._data = data
        self._pages = pages
        self._view = view

    @property
    def view(self) -> JobView:
        # The pages are taken when the view is first needed, not when the summary came: a client that starts
        # watching reads the stored pages first (see JobHub.watch_stored), and pages are at least as new as the
        # summary that names them.
        if self._view is None:
            assert self._data is not None
            arrays = self._pages.arrays(item_pages(self._data)) if self._pages is not None else []
            self._view = JobView.model_validate_json(view_bytes(self._data, arrays))
            self._data, self._pages = None, None
        return self._view


class JobPages:
    """The newest stored page of items of a watched job, by page number (pages arrive before their summary)."""

    def __init__(self) -> None:
        self._pages: dict[int, tuple[int, bytes]] = {}

    def offer(self, page: int, seq: int, array: bytes) -> None:
        known = self._pages.get(page)
        if known is None or seq >= known[0]:
            self._pages[page] = (seq, array)

    def arrays(self, count: int) -> list[bytes]:
        return [self._pages.get(page, (0, b"[]"))[1] for page in range(count)]


@dataclass(eq=False)
class Watcher:
    job_id: str
    latest: Snapshot | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, snapshot: Snapshot) -> None:
        if self.latest is None or snapshot.seq > self.latest.seq:
            self.latest = snapshot
            self.changed.set()


@dataclass(eq=False)
class ListWatcher:
    """A client of the all-jobs stream: the newest summary of every job that changed since it last looked."""

    pending: dict[str, JobSummary] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, summary: JobSummary) -> None:
        self.pending[summary.id] = summary
        self.changed.set()

    def take(self) -> list[JobSummary]:
        out = sorted(self.pending.values(), key=lambda s: s.seq)
        self.pending.clear()
        self.changed.clear()
        return out


class JobHub:
    def __init__(self) -> None:
        self.index = JobIndex()
        self.summaries = self.index.summaries
        self._watchers: dict[str, set[Watcher]] = {}
        self._list_watchers: set[ListWatcher] = set()
        # Pages of items are kept only for jobs somebody watches.
        self._pages: dict[str, JobPages] = {}
        self._kv: KeyValue | None = None
        self._sub = None
        self.updates = 0

    @property
    def watcher_count(self) -> int:
        return sum(len(w) for w in self._watchers.values()) + len(self._list_watchers)

    async def start(self, nc: NATS, kv: KeyValue) -> None:
        # Subscribe before loading, so nothing put in between is missed; newer seq wins when both arrive.
        self._kv = kv
        self._sub = await watch_bucket(nc, JOBS_BUCKET, on_put=self._accept_bytes, on_delete=self._forget)
        stored = await read_bucket(kv, keys=SUMMARY_KEYS)
        for key, value in stored.items():
            self._accept_bytes(key, value)
        log.info("hub loaded %d job views", len(stored))

    async def refresh(self, kv: KeyValue) -> None:
        """After a reconnect: updates put while we were away were missed, so read the watched jobs again."""
        for job_id in list(self._watchers):
            try:
                await self._load(job_id, kv)
            except Exception:
                continue

    async def _load(self, job_id: str, kv: KeyValue) -> JobView | None:
        """Read a watched job's stored view: its pages go to the job's page cache, its summary is taken."""
        stored = await load(kv, job_id)
        if stored is None:
            return None
        pages = self._pages.get(job_id)
        if pages is not None:
            for number, (seq, array, _) in enumerate(stored.pages):
                pages.offer(number, seq, array)
        view = stored.view()
        self._take(view.summary(), Snapshot(view.seq, view=view))
        return view

    async def watch_stored(self, job_id: str) -> tuple[Watcher, JobView | None]:
        """Watch a job and read its stored view (None if the projector has not written it yet)."""
        watcher = self.watch(job_id)
        try:
            view = await self._load(job_id, self._kv) if self._kv is not None else None
        except BaseException:
            self.unwatch(watcher)
            raise
        return watcher, view

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:
                pass
            self._sub = None

    def _forget(self, key: str) -> None:
        self.index.remove(key)

    def _accept_bytes(self, key: str, data: bytes) -> None:
        job_id, page = parse_key(key)
        if page is not None:
            pages = self._pages.get(job_id)
            if pages is not None and page >= 0:
                seq, array = split_page(data)
                pages.offer(page, seq, array)
            return
        try:
            # The summary only: pydantic-core skips over what it does not know.
            summary = JobSummary.model_validate_json(data)
        except ValidationError as exc:
            log.error("unreadable view under key %s: %s", key, exc)
            return
        self._take(summary, Snapshot(summary.seq, data=data, pages=self._pages.get(job_id)))

    def accept(self, view: JobView) -> None:
        """Take a view (the fold of a job just accepted) if it is newer than what we have."""
        self._take(view.summary(), Snapshot(view.seq, view=view))

    def _take(self, summary: JobSummary, snapshot: Snapshot) -> None:
        self.updates += 1
        known = self.summaries.get(summary.id)
        if summary.deleted_at is not None:
            # Deleted: out of the lists; streams hear it once (with `deleted_at`) so that pages drop it.
            if known is not None:
                self.index.remove(summary.id)
                for list_watcher in self._list_watchers:
                    list_watcher.offer(summary)
            for watcher in self._watchers.get(summary.id, ()):
                watcher.offer(snapshot)
            return
        if known is None or summary.seq >= known.seq:
            self.index.put(summary)
            if known is None or summary.seq > known.seq:
                for list_watcher in self._list_watchers:
                    list_watcher.offer(summary)
        for watcher in self._watchers.get(summary.id, ()):
            watcher.offer(snapshot)

    def watch_all(self) -> ListWatcher:
        watcher = ListWatcher()
        self._list_watchers.add(watcher)
        return watcher

    def unwatch_all(self, watcher: ListWatcher) -> None:
        self._list_watchers.discard(watcher)

    def changed_since(self, seq: int) -> list[JobSummary]:
        return sorted((s for s in self.summaries.values() if s.seq > seq), key=lambda s: s.seq)

    def watch(self, job_id: str) -> Watcher:
        watcher = Watcher(job_id)
        self._watchers.setdefault(job_id, set()).add(watcher)
        self._pages.setdefault(job_id, JobPages())
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        watchers = self._watchers.get(watcher.job_id)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[watcher.job_id]
                self._pages.pop(watcher.job_id, None)
