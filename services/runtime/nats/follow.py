"""Following a small stream from its start in every process (presets, subscriptions): one ordered consumer, each
message handed over in order, and a start that returns once what the stream held at the call has been read."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Callable

from nats.js import JetStreamContext, api


async def follow(
    js: JetStreamContext, stream: str, subjects: str, on_message: Callable[[Any], None], timeout: float = 30.0
) -> Any:
    """Subscribe and wait until caught up; returns the subscription (give it to ``unfollow``)."""
    last = (await js.stream_info(stream)).state.last_seq
    caught_up = asyncio.Event()
    if last == 0:
        caught_up.set()

    async def on_msg(msg: Any) -> None:
        on_message(msg)
        if msg.metadata.sequence.stream >= last:
            caught_up.set()

    sub = await js.subscribe(subjects, ordered_consumer=True, deliver_policy=api.DeliverPolicy.ALL, cb=on_msg)
    await asyncio.wait_for(caught_up.wait(), timeout)
    return sub


async def unfollow(sub: Any) -> None:
    if sub is not None:
        with contextlib.suppress(Exception):  # the connection may be closing already
            await sub.unsubscribe()
