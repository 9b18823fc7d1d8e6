"""The per-job SSE stream: a snapshot, then changes, with ids that only grow over a job's life.

Message ids come from stream sequences: an item message has id ``2 * item.seq`` and a job message
``2 * view.seq + 1``, so every message of one job has its own, increasing id. With ``Last-Event-ID: N`` a client
gets only messages whose id is above N: the items and job state that changed since.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import AsyncIterator

from litestar.response import ServerSentEventMessage

from contracts.views import JobSummary, JobView
from services.api.hub import JobHub, ListWatcher, Watcher

RETRY_MS = 2000


class Heartbeat(ServerSentEventMessage):
    """A bare comment line. Litestar's comment messages also carry an empty `data:` line, which EventSource would
    dispatch as an empty `message` event."""

    def encode(self) -> bytes:
        return b": keep-alive\r\n\r\n"


def item_message_id(seq: int) -> int:
    return 2 * seq


def job_message_id(seq: int) -> int:
    return 2 * seq + 1


class Frames(ServerSentEventMessage):
    """Several encoded SSE messages sent as one write: an update of a job (its changed items, then the job) costs
    each client one send instead of one per message."""

    def __init__(self, frames: bytes) -> None:
        super().__init__()
        self.frames = frames

    def encode(self) -> bytes:
        return self.frames


class _Encoded:
    """The encoded messages of one view, made once and shared by every client following the job (views never
    change)."""

    __slots__ = ("summary", "items", "size")

    def __init__(self) -> None:
        self.summary: bytes | None = None
        self.items: dict[str, bytes] = {}
        self.size = 0  # bytes held


_ENCODED: OrderedDict[tuple[str, int], _Encoded] = OrderedDict()
_ENCODED_MAX = 4096
# Bytes the cache may hold: a 1,000-item view's messages are ~0.8 MB, and 4,096 of them would be gigabytes.
_ENCODED_MAX_BYTES = 64 * 1024 * 1024
_encoded_bytes = 0


def _encoded(view: JobView) -> _Encoded:
    key = (view.id, view.seq)
    found = _ENCODED.get(key)
    if found is None:
        found = _ENCODED[key] = _Encoded()
        _evict()
    return found


def _held(cache: _Encoded, data: bytes) -> bytes:
    """Count ``data`` (just encoded into ``cache``) against the byte budget."""
    global _encoded_bytes
    cache.size += len(data)
    _encoded_bytes += len(data)
    _evict()
    return data


def _evict() -> None:
    """Drop the oldest views' messages until the cache is within its count and byte budgets (the newest stays)."""
    global _encoded_bytes
    while len(_ENCODED) > 1 and (len(_ENCODED) > _ENCODED_MAX or _encoded_bytes > _ENCODED_MAX_BYTES):
        _, dropped = _ENCODED.popitem(last=False)
        _encoded_bytes -= dropped.size


def changes_since(view: JobView, last_id: int) -> tuple[bytes, int]:
    """The encoded messages a client that has seen ``last_id`` needs (items changed since, then the job), and the
    id of the last of them (``last_id`` if none).

    One event can change several items (a cancel skips all that were waiting, a retry queues all that failed), and
    their messages share the id ``2 × seq``. A client whose connection dropped among them resumes from that id, so
    when several items have exactly that id they are sent again: a client replaces an item by its id, and a repeat
    costs nothing where a miss would leave an item stale. (A lone item with that id is the one the client saw last;
    after a full update the last id is a job's, odd, and nothing repeats.)"""
    cache = _encoded(view)
    frames = []
    after = last_id
    if last_id % 2 == 0 and sum(1 for i in view.items if item_message_id(i.seq) == last_id) > 1:
        after = last_id - 1
    for item in sorted((i for i in view.items if item_message_id(i.seq) > after), key=lambda i: (i.seq, i.index)):
        data = cache.items.get(item.id)
        if data is None:
            message = ServerSentEventMessage(data=item.model_dump_json(), event="item", id=item_message_id(item.seq))
            data = cache.items[item.id] = _held(cache, message.encode())
        frames.append(data)
        last_id = item_message_id(item.seq)
    if job_message_id(view.seq) > last_id:
        if cache.summary is None:
            summary = view.summary().model_dump_json()
            cache.summary = _held(
                cache, ServerSentEventMessage(data=summary, event="job", id=job_message_id(view.seq)).encode()
            )
        frames.append(cache.summary)
        last_id = job_message_id(view.seq)
    return b"".join(frames), last_id


async def job_stream(
    hub: JobHub, watcher: Watcher, first: JobView, last_id: int, heartbeat: float
) -> AsyncIterator[ServerSentEventMessage]:
    """Yields until the job is terminal and its final state was sent. Owns ``watcher`` and releases it."""
    try:
        view = first
        if watcher.latest is not None and watcher.latest.seq > view.seq:
            view = watcher.latest.view
        # The reconnection delay, once, in a block of its own (it dispatches no event).
        yield Frames(f"retry: {RETRY_MS}\r\n\r\n".encode())
        while True:
            frames, last_id = changes_since(view, last_id)
            if frames:
                yield Frames(frames)
            if view.terminal:
                return
            watcher.changed.clear()
            if watcher.latest is not None and watcher.latest.seq > view.seq:
                view = watcher.latest.view
                continue
            try:
                await asyncio.wait_for(watcher.changed.wait(), heartbeat)
            except asyncio.TimeoutError:
                yield Heartbeat()
                continue
            if watcher.latest is not None and watcher.latest.seq > view.seq:
                view = watcher.latest.view
    finally:
        hub.unwatch(watcher)


def summary_message(summary: JobSummary) -> ServerSentEventMessage:
    return ServerSentEventMessage(data=summary.model_dump_json(), event="job", id=job_message_id(summary.seq))


async def jobs_stream(
    hub: JobHub, watcher: ListWatcher, first: list[JobSummary], heartbeat: float, owner: str | None = None
) -> AsyncIterator[ServerSentEventMessage]:
    """All jobs (``owner``: that user's only): ``first`` (a snapshot, or what changed since Last-Event-ID), then
    every change. Never ends."""
    try:
        first_message = True
        batch = first
        while True:
            for summary in batch:
                if owner is not None and summary.owner != owner:
                    continue
                message = summary_message(summary)
                if first_message:
                    message.retry = RETRY_MS
                    first_message = False
                yield message
            try:
                await asyncio.wait_for(watcher.changed.wait(), heartbeat)
            except asyncio.TimeoutError:
                yield Heartbeat()
                batch = []
                continue
            batch = watcher.take()
    finally:
        hub.unwatch_all(watcher)


def parse_last_event_id(value: str | None) -> int:
    try:
        return int(value) if value is not None and value.strip() else -1
    except ValueError:
        return -1
