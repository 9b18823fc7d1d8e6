"""The projector's side of the read-model bucket: reading a job's stored view and writing what changed of it (its
changed pages of items, then its summary; see ``runtime.nats.views`` for the layout).

Writes are compare-and-set on each key's revision, and a conflict is settled by the sequence each value was written
from: the newer view wins. Replicas fold the same stream in the same order, so two views of one job at one sequence
are the same; a replica that is behind finds its values already written by one that is ahead and leaves them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Awaitable, Callable

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from contracts.views import JobView
from services.progress.limits import cut
from services.runtime.nats.views import PAGE_SIZE, load, page_count, page_key, paged, seq_of, stored_values

CAS_RETRIES = 5
# Room left in a message for the KV headers and the protocol's own.
HEADROOM = 8 * 1024


@dataclass
class Written:
    """What the bucket holds for a job as this projector last wrote or read it: the view those values were made from
    (its items compared by identity tell the changed pages) and each key's revision."""

    view: JobView | None = None
    summary_revision: int | None = None
    page_revisions: dict[int, int] = field(default_factory=dict)


class ViewStore:
    def __init__(
        self,
        kv: KeyValue,
        *,
        max_payload: int | None = None,
        refold: Callable[[str], Awaitable[JobView | None]] | None = None,
    ) -> None:
        self._kv = kv
        self._limit = max_payload - HEADROOM if max_payload else None
        # A job whose stored pages are newer than its summary (a writer stopped between them) is folded again from
        # its events; without a way to do that, the stored view is taken as it is.
        self._refold = refold
        self.conflicts = 0

    async def read(self, job_id: str) -> tuple[JobView | None, Written]:
        stored = await load(self._kv, job_id)
        if stored is None:
            return None, Written()
        revisions = {n: revision for n, (_, _, revision) in enumerate(stored.pages) if revision}
        if not stored.consistent and self._refold is not None:
            # Every page is written again from the fold (the newer-wins rule keeps what is newer still).
            return await self._refold(job_id), Written(None, stored.revision, revisions)
        view = stored.view()
        return view, Written(view, stored.revision, revisions)

    async def write(self, view: JobView, written: Written) -> tuple[JobView, Written, int | None]:
        """Write the pages that changed since ``written``, then the summary. Returns the view as written (cut if a
        value would not fit in a message, see ``limits``), what is now stored, and the size that forced a cut."""
        # A job that just became paged writes all of its pages (what it had was one value).
        before = written.view if written.view is not None and paged(written.view) else None
        encoded, summary = stored_values(view, self._changed_pages(view, before) if paged(view) else None)
        too_big = [n for n, data in encoded.items() if self._limit and len(data) > self._limit]
        cut_from = None
        if too_big or (self._limit and len(summary) > self._limit):
            cut_from = max([len(encoded[n]) for n in too_big] + [len(summary)])
            view = cut(view, cut_from, keep=min(too_big, default=0) * PAGE_SIZE)
            encoded, summary = stored_values(view)
        revisions = dict(written.page_revisions)
        for page, data in encoded.items():
            key = page_key(view.id, page)
            revisions[page] = await self._put(key, data, view.seq, revisions.get(page))
        summary_revision = await self._put(view.id, summary, view.seq, written.summary_revision)
        return view, Written(view, summary_revision, revisions), cut_from

    @staticmethod
    def _changed_pages(view: JobView, before: JobView | None) -> list[int]:
        count = page_count(len(view.items))
        if before is None:
            return list(range(count))
        old, new = before.items, view.items
        changed = []
        for page in range(count):
            start, end = page * PAGE_SIZE, (page + 1) * PAGE_SIZE
            a, b = new[start:end], old[start:end]
            if len(a) != len(b) or any(x is not y for x, y in zip(a, b, strict=True)):
                changed.append(page)
        return changed

    async def _put(self, key: str, data: bytes, seq: int, revision: int | None) -> int:
        """Compare-and-set ``key``; on a conflict, the value from the newer view stays."""
        for _ in range(CAS_RETRIES):
            try:
                if revision is None:
                    return await self._kv.create(key, data)
                return await self._kv.update(key, data, last=revision)
            except KeyWrongLastSequenceError:
                self.conflicts += 1
                try:
                    entry = await self._kv.get(key)
                except KeyNotFoundError:
                    revision = None
                    continue
                if entry.value and seq_of(key, entry.value) >= seq:
                    return entry.revision or 0
                revision = entry.revision
        raise RuntimeError(f"could not write {key}: it keeps changing under us")
