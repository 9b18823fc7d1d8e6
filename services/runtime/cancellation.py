"""Stopping work that runs right now: a job's cancel, or this process shutting down.

Every running download or extraction holds a token. `cancel.requested` events reach every worker process through
one core subscription and trip the tokens of that job at once; a job cancelled while a process was away is found in
its view in the KV bucket before any new work starts. A token is also tripped when the process shuts down, so
in-flight work is handed back (nak) instead of finished.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from typing import Awaitable, Callable

from contracts.events import job_id_of, subject_filter

log = logging.getLogger("tubeflow.cancellation")

CANCEL_TYPE = "cancel.requested"


class Aborted(Exception):
    """The work was stopped on purpose; ``reason`` is "cancelled" or "shutdown"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CancelToken:
    def __init__(self, job_id: str, kind: str = "") -> None:
        self.job_id = job_id
        # What the token stops ("download", "resolve", …): a paused queue stops the downloads only.
        self.kind = kind
        self.reason: str | None = None
        self.tripped = asyncio.Event()
        self.tripped_threadsafe = threading.Event()  # read by yt-dlp's worker thread

    def trip(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.tripped.set()
        self.tripped_threadsafe.set()

    def raise_if_tripped(self) -> None:
        """For worker threads (yt-dlp hooks): stop by raising."""
        if self.tripped_threadsafe.is_set():
            raise Aborted(self.reason or "cancelled")


class Cancellations:
    def __init__(self, is_cancelled_in_store: Callable[[str], Awaitable[bool]] | None = None) -> None:
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        self._tokens: dict[str, set[CancelToken]] = {}
        self._lookup = is_cancelled_in_store
        self._shutting_down = False
        self._sub = None

    async def subscribe(self, nc) -> None:  # noqa: ANN001 - a nats Client
        async def on_cancel(msg) -> None:  # noqa: ANN001
            self.cancel(job_id_of(msg.subject))

        self._sub = await nc.subscribe(subject_filter(CANCEL_TYPE), cb=on_cancel)

    def cancel(self, job_id: str) -> None:
        self._cancelled[job_id] = None
        self._cancelled.move_to_end(job_id)
        while len(self._cancelled) > 10_000:
            self._cancelled.popitem(last=False)
        for token in list(self._tokens.get(job_id, ())):
            token.trip("cancelled")
        log.info("job %s cancelled: %d running task(s) stopped", job_id, len(self._tokens.get(job_id, ())))

    def heard_cancelled(self, job_id: str) -> bool:
        """Cancelled as far as this process has heard (no lookup in the store)."""
        return job_id in self._cancelled

    async def is_cancelled(self, job_id: str) -> bool:
        if job_id in self._cancelled:
            return True
        if self._lookup is not None:
            try:
                if await self._lookup(job_id):
                    self._cancelled[job_id] = None
                    return True
            except Exception as exc:  # the subscription still catches a cancel that comes later
                log.debug("cancel lookup failed for %s: %s", job_id, exc)
        return False

    def trip_kind(self, kind: str, reason: str) -> int:
        """Trip every running token of ``kind`` (e.g. the downloads, when the queue is paused now)."""
        tripped = 0
        for tokens in list(self._tokens.values()):
            for token in list(tokens):
                if token.kind == kind:
                    token.trip(reason)
                    tripped += 1
        return tripped

    def token(self, job_id: str, kind: str = "") -> CancelToken:
        token = CancelToken(job_id, kind)
        if self._shutting_down:
            token.trip("shutdown")
        elif job_id in self._cancelled:
            token.trip("cancelled")
        self._tokens.setdefault(job_id, set()).add(token)
        return token

    def release(self, token: CancelToken) -> None:
        tokens = self._tokens.get(token.job_id)
        if tokens is not None:
            tokens.discard(token)
            if not tokens:
                del self._tokens[token.job_id]

    def running_for(self, job_id: str) -> int:
        return len(self._tokens.get(job_id, ()))

    @property
    def running(self) -> int:
        return sum(len(t) for t in self._tokens.values())

    async def shutdown(self, grace: float) -> None:
        """Trip every token and wait (at most ``grace`` seconds) for the work holding them to let go."""
        self._shutting_down = True
        for tokens in list(self._tokens.values()):
            for token in list(tokens):
                token.trip("shutdown")
        deadline = asyncio.get_running_loop().time() + grace
        while self.running and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:
                pass


async def until_tripped(token: CancelToken, work: Awaitable):  # noqa: ANN201
    """Await ``work`` unless the token trips first; then cancel it and raise Aborted."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(token.tripped.wait())
    try:
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        waiter.cancel()
        raise
    waiter.cancel()
    if task in done:
        return task.result()
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass
    raise Aborted(token.reason or "cancelled")
