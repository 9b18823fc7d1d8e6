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
from typing import Callable, Sequence

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
    """Next message from the first of ``durables`` (highest priority first) that has one.

    Each consumer is asked on an inbox subscription of its own (as nats-py's pull subscriptions do): an answer that
    comes after its ask gave up waits there and is taken by the next ask, so no delivery is dropped on the floor."""

    def __init__(self, nc: Client, stream: str, durables: Sequence[str], wake_subject: str) -> None:
        self._nc = nc
        self._requests = [f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}" for durable in durables]
        self._wake_subject = wake_subject
        self._wake = asyncio.Event()
        self._sub = None
        self._inboxes: list = []

    async def start(self) -> None:
        async def woken(_msg: Msg) -> None:
            self._wake.set()

        self._sub = await self._nc.subscribe(self._wake_subject, cb=woken)
        self._inboxes = [await self._nc.subscribe(self._nc.new_inbox()) for _ in self._requests]

    async def close(self) -> None:
        for sub in [self._sub, *self._inboxes]:
            if sub is None:
                continue
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection is closing anyway
                log.debug("unsubscribe: %s", exc)

    async def ask(self) -> tuple[int, Msg] | None:
        """One pass over the consumers: (priority rank, message), or None when every one is empty."""
        for rank, subject in enumerate(self._requests):
            msg = await self._ask_one(subject, self._inboxes[rank])
            if msg is not None:
                return rank, msg
        return None

    async def next(
        self,
        stop: asyncio.Event,
        ready: Callable[[], bool] = lambda: True,
        give_way: Callable[[], bool] = lambda: False,
    ) -> tuple[int, Msg] | None:
        """Wait for the next message. None once ``stop`` is set, or when ``give_way()`` says the caller's slot is
        wanted elsewhere; while ``ready()`` is false, nothing is asked for."""
        while not stop.is_set():
            if give_way():
                return None
            self._wake.clear()
            if not ready():
                await asyncio.sleep(IDLE_POLL / 4)
                continue
            try:
                got = await self.ask()
            except (nats.errors.ConnectionClosedError, nats.errors.NoRespondersError, OSError) as exc:
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

    async def _ask_one(self, subject: str, inbox) -> Msg | None:  # noqa: ANN001 - a nats Subscription
        while True:  # an answer to an earlier ask that was given up on: a message is taken, a status dropped
            try:
                late = inbox.pending_msgs and await inbox.next_msg(timeout=0.001)
            except nats.errors.TimeoutError:
                break
            if not late:
                break
            if _status(late) is None:
                return late
        await self._nc.publish(subject, NO_WAIT, reply=inbox.subject)
        try:
            reply = await inbox.next_msg(timeout=ASK_TIMEOUT)
        except nats.errors.TimeoutError:
            log.warning("no answer from %s in %.0f s", subject, ASK_TIMEOUT)
            return None
        status = _status(reply)
        if status is not None:
            # 404 no messages, 408 request expired, 409 consumer busy or gone: nothing here now.
            if status not in ("404", "408"):
                log.debug("%s answered %s %s", subject, status, (reply.headers or {}).get("Description"))
            return None
        return reply


def _status(msg: Msg) -> str | None:
    """The status of a JetStream control answer (no data, a Status header), None for a message."""
    if msg.data or not msg.headers:
        return None
    return msg.headers.get("Status")


NO_WAIT = json.dumps({"batch": 1, "no_wait": True}).encode()
