"""Ending asyncio tasks that do not like to end."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("tubeflow.tasks")


async def cancel_until_done(task: asyncio.Future, tries: int = 100) -> None:
    """Cancel ``task`` and wait for it to end. nats-py's connect loop swallows a cancel that lands while it tidies up
    a failed attempt (and so does a FastStream broker connecting through it): ask again until it goes, or give up
    after ``tries`` x 50 ms and leave it."""
    for _ in range(tries):
        task.cancel()
        await asyncio.wait({task}, timeout=0.05)
        if task.done():
            return
    log.warning("a task ignored %d cancels: left behind", tries)


async def either(a: asyncio.Event, b: asyncio.Event) -> None:
    """Until one of the two events is set."""
    waiters = {asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
