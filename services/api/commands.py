"""The write side of the API: job commands (submit, cancel, retry, start, priority, delete) publish events and answer with the view their
fold gives at once. Whether a command applies is decided in ``contracts.decisions``; this only carries it out."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime
from typing import Awaitable, Callable

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from contracts import events as ev
from contracts.decisions import Refusal, plan_cancel, plan_delete, plan_priority, plan_retry, plan_start
from contracts.fold import apply
from contracts.ids import new_job_id, random_event_id, step_event_id
from contracts.views import JobView
from services.api.requests import JobRequest
from services.runtime.clock import utcnow
from services.runtime.nats import Publisher


class JobCommands:
    """``find`` reads a job's current view (the read side); ``on_accepted`` hears of every job submitted, with the
    view its `requested` event folds to, before the projector has written it."""

    def __init__(
        self,
        publisher: Publisher,
        keys: KeyValue,
        find: Callable[[str], Awaitable[JobView | None]],
        on_accepted: Callable[[JobView], None] = lambda view: None,
        now: Callable[[], datetime] = utcnow,
        auto_start: bool = True,
    ) -> None:
        self._auto_start = auto_start
        self._publisher = publisher
        self._keys = keys
        self._find = find
        self._on_accepted = on_accepted
        self._now = now

    async def submit(
        self, request: JobRequest, idempotency_key: str | None = None, actor: str | None = None
    ) -> JobView:
        job_id = new_job_id()
        claimed = None
        if idempotency_key is not None:
            existing = await self._claim_key(idempotency_key, job_id)
            if existing is not None:
                return existing
            claimed = hashlib.sha256(idempotency_key.encode()).hexdigest()
        event = ev.make_event(
            "requested",
            job_id=job_id,
            data=request.template(self._auto_start)
            .requested(request.url, request.playlist_items)
            .model_copy(update={"owner": actor}),
            occurred_at=self._now(),
            event_id=step_event_id(job_id, "requested"),
        ).model_copy(update={"actor": actor})
        try:
            view = await self._publish_and_fold(None, event)
        except BaseException:
            if claimed is not None:
                # The job was never accepted: the key must not keep pointing at it (it would answer 500 for 24 h).
                await self._keys.delete(claimed)
            raise
        self._on_accepted(view)
        return view

    async def _claim_key(self, idempotency_key: str, job_id: str) -> JobView | None:
        """The first request with a key claims it for ``job_id`` (None back); later ones get the job it made."""
        key = hashlib.sha256(idempotency_key.encode()).hexdigest()
        try:
            await self._keys.create(key, job_id.encode())
            return None
        except KeyWrongLastSequenceError:
            existing = (await self._keys.get(key)).value.decode()
        for _ in range(50):
            view = await self._find(existing)
            if view is not None:
                return view
            await asyncio.sleep(0.05)  # the first request is still publishing its event
        raise RuntimeError(f"idempotency key points at job {existing}, which never appeared")

    async def cancel(self, view: JobView, actor: str | None = None) -> JobView | Refusal:
        return await self._carry_out(view, plan_cancel(view, self._now()), actor)

    async def retry(self, view: JobView, actor: str | None = None) -> JobView | Refusal:
        return await self._carry_out(view, plan_retry(view, self._now()), actor)

    async def start(self, view: JobView, actor: str | None = None) -> JobView | Refusal:
        return await self._carry_out(view, plan_start(view, self._now()), actor)

    async def prioritize(self, view: JobView, priority: str, actor: str | None = None) -> JobView | Refusal:
        if priority == view.priority and not view.terminal:
            return view
        return await self._carry_out(view, plan_priority(view, priority, self._now(), random_event_id()), actor)

    async def delete(self, view: JobView, files: bool, reason: str = "requested", actor: str | None = None) -> JobView:
        """Cancel the job if it runs, then `job.deleted`; answers with the view the last event folds to."""
        folded = view
        for event in plan_delete(view, files, self._now(), reason):
            folded = await self._publish_and_fold(folded, _by(event, actor))
        return folded

    async def _carry_out(
        self, view: JobView, plan: list[ev.Envelope] | Refusal, actor: str | None = None
    ) -> JobView | Refusal:
        """Publish the plan's first event (saying who asked) and answer with the view it folds to; then the work it
        queues."""
        if isinstance(plan, Refusal):
            return plan
        first, *rest = plan
        folded = await self._publish_and_fold(view, _by(first, actor))
        await asyncio.gather(*(self._publisher.publish(event) for event in rest))
        return folded

    async def _publish_and_fold(self, view: JobView | None, event: ev.Envelope) -> JobView:
        ack = await self._publisher.publish(event)
        return apply(view, event.model_copy(update={"seq": ack.seq}))


def _by(event: ev.Envelope, actor: str | None) -> ev.Envelope:
    """The event as caused by ``actor`` (a command's own event; the work it queues is the services')."""
    return event.model_copy(update={"actor": actor}) if actor else event
