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


class _Encoded:
    """The JSON of one view, made once and shared by every client following the job (views never change)."""

    __slots__ = ("summary", "items")

    def __init__(self) -> None:
        self.summary: str | None = None
        self.items: dict[str, str] = {}


_ENCODED: OrderedDict[tuple[str, int], _Encoded] = OrderedDict()
_ENCODED_MAX = 4096


def _encoded(view: JobView) -> _Encoded:
    key = (view.id, view.seq)
    found = _ENCODED.get(key)
    if found is None:
        found = _ENCODED[key] = _Encoded()
        while len(_ENCODED) > _ENCODED_MAX:
            _ENCODED.popitem(last=False)
    return found


def changes_since(view: JobView, last_id: int) -> list[ServerSentEventMessage]:
    cache = _encoded(view)
    messages = []
    for item in sorted((i for i in view.items if item_message_id(i.seq) > last_id), key=lambda i: (i.seq, i.index)):
        data = cache.items.get(item.id)
        if data is None:
            data = cache.items[item.id] = item.model_dump_json()
        messages.append(ServerSentEventMessage(data=data, event="item", id=item_message_id(item.seq)))
    if job_message_id(view.seq) > last_id:
        if cache.summary is None:
            cache.summary = view.summary().model_dump_json()
        messages.append(ServerSentEventMessage(data=cache.summary, event="job", id=job_message_id(view.seq)))
    return messages


async def job_stream(
    hub: JobHub, watcher: Watcher, first: JobView, last_id: int, heartbeat: float
) -> AsyncIterator[ServerSentEventMessage]:
    """Yields until the job is terminal and its final state was sent. Owns ``watcher`` and releases it."""
    try:
        view = first
        if watcher.latest is not None and watcher.latest.seq > view.seq:
            view = watcher.latest
        first_message = True
        while True:
            for message in changes_since(view, last_id):
                if first_message:
                    message.retry = RETRY_MS
                    first_message = False
                last_id = int(message.id)  # type: ignore[arg-type]
                yield message
            if view.terminal:
                return
            watcher.changed.clear()
            if watcher.latest is not None and watcher.latest.seq > view.seq:
                view = watcher.latest
                continue
            try:
                await asyncio.wait_for(watcher.changed.wait(), heartbeat)
            except asyncio.TimeoutError:
                yield Heartbeat()
                continue
            if watcher.latest is not None and watcher.latest.seq > view.seq:
                view = watcher.latest
    finally:
        hub.unwatch(watcher)


def summary_message(summary: JobSummary) -> ServerSentEventMessage:
    return ServerSentEventMessage(data=summary.model_dump_json(), event="job", id=job_message_id(summary.seq))


async def jobs_stream(
    hub: JobHub, watcher: ListWatcher, first: list[JobSummary], heartbeat: float
) -> AsyncIterator[ServerSentEventMessage]:
    """All jobs: ``first`` (a snapshot, or what changed since Last-Event-ID), then every change. Never ends."""
    try:
        first_message = True
        batch = first
        while True:
            for summary in batch:
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
