"""Ending asyncio tasks that do not like to end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Coroutine, TypeVar

log = logging.getLogger("tubeflow.tasks")
T = TypeVar("T")


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


def run_briefly(work: Coroutine[Any, Any, T], grace: float = 2.0) -> T:
    """``asyncio.run(work)`` for a command that ends: what it leaves running is cancelled and given ``grace`` seconds,
    then left behind with the loop (asyncio.run waits for every task, and a nats-py connect loop that swallows its
    cancels, after a refused connection, held `tubeflow verify` past a minute)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(work)
    finally:
        left = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(asyncio.wait(left, timeout=grace))
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
