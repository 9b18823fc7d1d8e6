"""The subscriptions as every reader holds them: the stream TUBEFLOW_SUBSCRIPTIONS folded in memory (one ordered
consumer per process), and the one way to write to it — an event published expecting the subscription's last
sequence, so two writers can't both act on what they read (the second is told `Conflict` and reads again)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from nats.js import JetStreamContext
from nats.js.errors import BadRequestError

from contracts.subscriptions import (
    ALL_SUBSCRIPTIONS,
    SubscriptionView,
    apply_subscription,
    parse_subscription_event,
    subscription_filter,
    subscription_subject,
)
from services.runtime.nats.follow import follow, unfollow
from services.runtime.nats.publish import DeadLetters
from services.runtime.nats.topology import SUBSCRIPTIONS_STREAM

log = logging.getLogger("tubeflow.subscriptions")

# JetStream's error for a publish whose expected last sequence is not the subject's (or filter's) last one.
WRONG_LAST_SEQUENCE = 10071


class Conflict(Exception):
    """Someone wrote to the subscription since it was read: read it again and decide again."""


class SubscriptionBook:
    def __init__(self, on_event: Callable[[Any, SubscriptionView | None], None] | None = None) -> None:
        self._views: dict[str, SubscriptionView] = {}
        self._js: JetStreamContext | None = None
        self._sub: Any = None
        self._seq = 0
        self._on_event = on_event
        self._tasks: set[asyncio.Task] = set()
        self.changed = asyncio.Event()

    async def start(self, js: JetStreamContext, timeout: float = 30.0) -> None:
        """Fold the stream, then keep following it; returns once caught up with the stream's end at the start."""
        self._js = js

        def on_message(msg: Any) -> None:
            seq = msg.metadata.sequence.stream
            try:
                event = parse_subscription_event(msg.data, seq)
            except ValueError as exc:
                log.error("unreadable subscription event on %s: %s", msg.subject, exc)
                self._set_aside(msg, seq, f"unreadable: {exc}")
            else:
                try:
                    self._fold(event)
                except Exception as exc:  # noqa: BLE001 - the fold is total; were it not, one event must not stop us
                    log.error("subscription event at seq %s set aside, the fold raised %r", seq, exc)
                    self._set_aside(msg, seq, f"unfoldable: {type(exc).__name__}: {exc}")
            self._seq = max(self._seq, seq)

        self._sub = await follow(js, SUBSCRIPTIONS_STREAM, ALL_SUBSCRIPTIONS, on_message, timeout)

    def _set_aside(self, msg: Any, seq: int, reason: str) -> None:
        """To the dead-letter stream (once, whichever process sends it first: the id is the stream sequence)."""
        assert self._js is not None
        send = DeadLetters(self._js, "subscriptions").send(msg.subject, msg.data, None, seq, 1, reason)
        task = asyncio.get_running_loop().create_task(send)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fold(self, event: Any) -> None:
        current = self._views.get(event.subscription_id)
        if current is not None and event.seq and event.seq <= current.seq:
            return  # folded already (our own write, read back)
        view = apply_subscription(current, event)
        if view is not None:
            self._views[view.id] = view
        if self._on_event is not None:
            self._on_event(event, view)
        self.changed.set()

    async def stop(self) -> None:
        await unfollow(self._sub)

    def get(self, subscription_id: str) -> SubscriptionView | None:
        view = self._views.get(subscription_id)
        return None if view is None or view.deleted else view

    def all(self) -> list[SubscriptionView]:
        return sorted((v for v in self._views.values() if not v.deleted), key=lambda v: v.created_at, reverse=True)

    async def publish(self, event: Any, expected: SubscriptionView | None) -> SubscriptionView:
        """Append ``event``, which was decided on ``expected`` (None: the subscription must not exist yet), and
        answer with the view it folds to. Conflict when the subscription changed meanwhile."""
        assert self._js is not None
        kind = event.type.removeprefix("subscription.")
        try:
            ack = await self._js.publish(
                subscription_subject(event.subscription_id, kind),
                event.model_dump_json().encode(),
                stream=SUBSCRIPTIONS_STREAM,
                headers={
                    "Nats-Msg-Id": event.event_id,
                    "Nats-Expected-Last-Subject-Sequence": str(expected.seq if expected else 0),
                    "Nats-Expected-Last-Subject-Sequence-Subject": subscription_filter(event.subscription_id),
                },
            )
        except BadRequestError as exc:
            if exc.err_code == WRONG_LAST_SEQUENCE:
                raise Conflict(f"subscription {event.subscription_id} changed meanwhile") from None
            raise
        if ack.duplicate:
            # Published before (a retry of the same decision): the stream has it; the subscription folds it.
            await self._caught_up_to(ack.seq)
        else:
            self._fold(event.model_copy(update={"seq": ack.seq}))
        view = self._views.get(event.subscription_id)
        assert view is not None
        return view

    async def _caught_up_to(self, seq: int, timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._seq < seq and loop.time() < deadline:
            await asyncio.sleep(0.02)
