"""The read side of the API: a job's view from the read models (or, before the projector got to it, from its
`requested` event), the stored bytes as they are, and its events from the stream."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from contracts import events as ev
from contracts.fold import apply
from contracts.ids import is_job_id
from contracts.views import JobView
from services.runtime.nats import STREAM, StoredEvent, read_job_events
from services.runtime.nats.views import load


class JobReads:
    def __init__(self, js: JetStreamContext, kv: KeyValue) -> None:
        self._js = js
        self._kv = kv

    async def get_json(self, job_id: str) -> bytes | None:
        """The view as stored, its summary and pages put together without parsing them (parsing and re-encoding a
        1,000-item view per GET costs tens of milliseconds)."""
        if not is_job_id(job_id):
            return None
        stored = await load(self._kv, job_id)
        if stored is not None:
            return None if _deleted(stored.summary) else stored.json()
        view = await self._requested(job_id)
        return view.model_dump_json().encode() if view is not None else None

    async def get(self, job_id: str) -> JobView | None:
        if not is_job_id(job_id):
            return None
        stored = await load(self._kv, job_id)
        if stored is not None:
            return None if _deleted(stored.summary) else stored.view()
        return await self._requested(job_id)

    async def requested(self, job_id: str) -> JobView | None:
        """The job as its `requested` event makes it (whether or not it was deleted since); None if it never was."""
        return await self._requested(job_id) if is_job_id(job_id) else None

    async def _requested(self, job_id: str) -> JobView | None:
        """Accepted but not folded yet (or the read models are being rebuilt): the `requested` event says enough."""
        try:
            raw = await self._js.get_last_msg(STREAM, ev.subject(job_id, "requested"))
        except NotFoundError:
            return None
        try:
            event = ev.parse_event(raw.data, seq=raw.seq)
        except ev.InvalidEvent:
            return None
        return apply(None, event)

    async def events(self, job_id: str, *, after: int, limit: int) -> list[StoredEvent]:
        if not is_job_id(job_id):
            return []
        return await read_job_events(self._js, job_id, after=after, limit=limit)


def _deleted(summary: bytes) -> bool:
    """A deleted job's stored summary (``deleted_at`` set), told without parsing it."""
    return b'"deleted_at":"' in summary
