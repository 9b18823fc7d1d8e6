"""Taking work in priority order from several durable consumers (one per priority, on the download queue's stream).

JetStream delivers one consumer's messages in stream order and knows nothing of priorities, so a free worker asks
each consumer in turn, highest first, for one message *now* (a pull request with ``no_wait``: the server answers at
once, with a message or with "none"), and takes the first it gets. Whatever process asks, it gets the highest
waiting ticket: the order holds across processes because every process asks the same consumers the same way.

An idle worker does not poll in a tight loop: it listens (core NATS, no consumer) to the queue's subjects, so a new
ticket wakes it at once; a ticket that comes back by itself (a retry after its delay, a dead worker's after ack_wait)
is found by the next ask, at most ``IDLE_POLL`` later.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Sequence

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

log = logging.getLogger("tubeflow.priority")

IDLE_POLL = 1.0
ASK_TIMEOUT = 5.0


class Delivery:
    """One delivered message with the settle methods of a FastStream NatsMessage, so ``work.handle`` settles it."""

    def __init__(self, msg: Msg) -> None:
        self.raw_message = msg

    async def ack(self) -> None:
        await self.raw_message.ack()

    async def nack(self, delay: float | None = None) -> None:
        await self.raw_message.nak(delay=delay)

    async def reject(self) -> None:
        await self.raw_message.term()

    async def in_progress(self) -> None:
        await self.raw_message.in_progress()


class PriorityFeed:
    """Next message from the first of ``durables`` (highest priority first) that has one."""

    def __init__(self, nc: Client, stream: str, durables: Sequence[str], wake_subject: str) -> None:
        self._nc = nc
        self._requests = [f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}" for durable in durables]
        self._wake_subject = wake_subject
        self._wake = asyncio.Event()
        self._sub = None

    async def start(self) -> None:
        async def woken(_msg: Msg) -> None:
            self._wake.set()

        self._sub = await self._nc.subscribe(self._wake_subject, cb=woken)

    async def close(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as exc:  # the connection is closing anyway
                log.debug("unsubscribe: %s", exc)

    async def ask(self) -> tuple[int, Msg] | None:
        """One pass over the consumers: (priority rank, message), or None when every one is empty."""
        for rank, subject in enumerate(self._requests):
            msg = await self._ask_one(subject)
            if msg is not None:
                return rank, msg
        return None

    async def next(self, stop: asyncio.Event) -> tuple[int, Msg] | None:
        """Wait for the next message (None once ``stop`` is set)."""
        while not stop.is_set():
            self._wake.clear()
            try:
                got = await self.ask()
            except (nats.errors.TimeoutError, nats.errors.ConnectionClosedError, nats.errors.NoRespondersError) as exc:
                log.warning("could not ask the download queue (%s); asking again", exc)
                got = None
            if got is not None:
                return got
            waiters = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())}
            try:
                await asyncio.wait(waiters, timeout=IDLE_POLL, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        return None

    async def _ask_one(self, subject: str) -> Msg | None:
        reply = await self._nc.request(subject, json.dumps({"batch": 1, "no_wait": True}).encode(), timeout=ASK_TIMEOUT)
        status = (reply.headers or {}).get("Status") if reply.headers else None
        if status is not None or not reply.reply:
            # 404 no messages, 408 request expired, 409 consumer busy or gone: nothing here now.
            if status not in (None, "404", "408"):
                log.debug("%s answered %s %s", subject, status, (reply.headers or {}).get("Description"))
            return None
        return reply
