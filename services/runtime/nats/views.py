"""How a job's view is stored in the read-model bucket: no value grows with the job's item count.

- A job of up to ``PAGE_SIZE`` items: ``<job>`` holds the whole view (JobView's JSON), as one value.
- A bigger job: ``<job>`` holds its summary (JobSummary's JSON) with ``"item_pages": N`` added at its end (readers
  of the summary ignore it), and ``<job>.p<n>`` holds page n of the items (``PAGE_SIZE`` items, in the view's order),
  written as ``<seq>\n<JSON array>`` where seq is that of the view the page was written from.

The projector writes a job's changed pages first, then its summary, and never replaces a value with one from an
older view (replicas fold the same stream in the same order, so the view at one sequence is the same everywhere).
A reader takes the summary, then the N pages it names: the items are at least as new as the summary. The bytes of
a whole view are put together without parsing: summary, then the pages' arrays; equal to JobView's own JSON.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import TypeAdapter

from contracts.views import ItemView, JobSummary, JobView

PAGE_SIZE = 100
_PAGES = re.compile(rb',"item_pages":(\d+)\}$')
_ITEMS = TypeAdapter(list[ItemView])
# The keys of summaries only (pages have a second token): what lists and the hub read.
SUMMARY_KEYS = "*"


def page_key(job_id: str, page: int) -> str:
    return f"{job_id}.p{page}"


def parse_key(key: str) -> tuple[str, int | None]:
    """(job id, page number), page None for a summary key."""
    job_id, dot, page = key.partition(".p")
    if not dot:
        return key, None
    return job_id, int(page) if page.isdigit() else -1


def page_count(items: int) -> int:
    return -(-items // PAGE_SIZE)


def summary_bytes(view: JobView) -> bytes:
    body = view.summary().model_dump_json().encode()
    return body[:-1] + b',"item_pages":%d}' % page_count(len(view.items))


def page_bytes(view: JobView, page: int) -> bytes:
    items = view.items[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
    return b"%d\n" % view.seq + _ITEMS.dump_json(items)


def item_pages(summary: bytes) -> int:
    found = _PAGES.search(summary)
    return int(found.group(1)) if found else 0


def split_page(data: bytes) -> tuple[int, bytes]:
    """(seq of the view it was written from, the JSON array of its items)."""
    seq, _, items = data.partition(b"\n")
    return int(seq), items


def paged(view: JobView) -> bool:
    return len(view.items) > PAGE_SIZE


def view_bytes(summary: bytes, arrays: list[bytes]) -> bytes:
    """A whole view's JSON from its summary and its pages' arrays, exactly as JobView would write it (a value that
    names no pages is a whole view already)."""
    found = _PAGES.search(summary)
    if found is None:
        return summary
    head = summary[: found.start()]
    inner = b",".join(array[1:-1] for array in arrays if len(array) > 2)
    return head + b',"items":[' + inner + b"]}"


def seq_of(key: str, data: bytes) -> int:
    """The view sequence a stored value was written from."""
    if parse_key(key)[1] is None:
        return JobSummary.model_validate_json(data).seq
    return split_page(data)[0]


@dataclass
class Stored:
    """A job's stored values as read: the summary and its revision, and each page's (seq, array, revision)."""

    summary: bytes
    revision: int
    pages: list[tuple[int, bytes, int]]

    @property
    def consistent(self) -> bool:
        """No page newer than the summary (a writer stopped between its pages and its summary otherwise)."""
        seq = JobSummary.model_validate_json(self.summary).seq
        return all(page_seq <= seq for page_seq, _, _ in self.pages)

    def json(self) -> bytes:
        return view_bytes(self.summary, [array for _, array, _ in self.pages])

    def view(self) -> JobView:
        return JobView.model_validate_json(self.json())


async def load(kv: KeyValue, job_id: str) -> Stored | None:
    """A job's summary and then the pages it names; None if there is no summary. A page that is missing (a rebuild
    under way) reads as empty."""
    try:
        entry = await kv.get(job_id)
    except KeyNotFoundError:
        return None
    if not entry.value:
        return None
    count = item_pages(entry.value)
    entries = await asyncio.gather(*(_get(kv, page_key(job_id, n)) for n in range(count)))
    pages = [(*split_page(e.value), e.revision) if e is not None and e.value else (0, b"[]", 0) for e in entries]
    return Stored(entry.value, entry.revision or 0, pages)


async def _get(kv: KeyValue, key: str):  # noqa: ANN202 - a KeyValue.Entry or None
    try:
        return await kv.get(key)
    except KeyNotFoundError:
        return None


def stored_values(view: JobView, pages: list[int] | None = None) -> tuple[dict[int, bytes], bytes]:
    """What to store for ``view``: its pages (those listed, or all) and the value under its own key (the summary of a
    paged view, the whole view of a small one)."""
    if not paged(view):
        return {}, view.model_dump_json().encode()
    numbers = range(page_count(len(view.items))) if pages is None else pages
    return {page: page_bytes(view, page) for page in numbers}, summary_bytes(view)


async def put_view(kv: KeyValue, view: JobView) -> None:
    """Every page, then the summary (or the whole small view), unconditionally: a rebuild into an empty bucket."""
    pages, head = stored_values(view)
    await asyncio.gather(*(kv.put(page_key(view.id, page), data) for page, data in pages.items()))
    await kv.put(view.id, head)


# A job's summary read by a worker is reused this long: a single video's path reads it two or three times within
# milliseconds (the cancel lookup before queueing and before the ticket runs, the job's byte budget).
SUMMARY_MEMO = 1.0
SUMMARY_MEMO_SIZE = 1024


class SummaryReader:
    """A job's summary (JobSummary, its items not built) from the read models, for the checks workers make before
    work: reused for SUMMARY_MEMO seconds. Live cancels reach workers through their subscription, not this; what it
    answers is what happened while they were away, for which a second's reuse changes nothing."""

    def __init__(self, kv: KeyValue, clock: Callable[[], float] = time.monotonic) -> None:
        self._kv = kv
        self._clock = clock
        self._memo: OrderedDict[str, tuple[float, JobSummary | None]] = OrderedDict()

    async def get(self, job_id: str) -> JobSummary | None:
        now = self._clock()
        kept = self._memo.get(job_id)
        if kept is not None and now - kept[0] < SUMMARY_MEMO:
            return kept[1]
        try:
            entry = await self._kv.get(job_id)
            summary = JobSummary.model_validate_json(entry.value) if entry.value else None
        except KeyNotFoundError:
            summary = None
        self._memo[job_id] = (now, summary)
        self._memo.move_to_end(job_id)
        while len(self._memo) > SUMMARY_MEMO_SIZE:
            self._memo.popitem(last=False)
        return summary
