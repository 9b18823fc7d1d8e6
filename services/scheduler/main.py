"""The scheduler's composition root: subscriptions checked when due, by whichever scheduler process holds the lease.

Every replica folds the subscriptions (one ordered consumer); only the lease holder checks. A holder killed mid-check
stops renewing, another takes the lease within one period and finds the same checks due (the fold says so: no
`checked` was recorded), so no check is lost; what the dead one had begun is found again, not done twice (checks)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from contracts.subscriptions import SubscriptionView, due
from services.engine.slots import SlotConfig, SlotPool
from services.engine.versions import EngineFollower, auto_update
from services.runtime.cancellation import Aborted, CancelToken
from services.runtime.clock import utcnow
from services.runtime.cookies import CookieStore
from services.runtime.cooldown import Cooldowns
from services.runtime.failures import MediaError
from services.runtime.infrastructure import open_infrastructure
from services.runtime.nats import IDEMPOTENCY_BUCKET, EventPublisher
from services.runtime.nats.lease import Lease
from services.runtime.nats.topology import PACING_BUCKET, SCHEDULER_BUCKET
from services.runtime.settings import Settings, worker_identity
from services.runtime.sitelimits import parse_pacing
from services.runtime.subscriptions import Conflict, SubscriptionBook
from services.runtime.tasks import cancel_until_done
from services.scheduler.checks import Checker

log = logging.getLogger("tubeflow.scheduler")

CONSUMERS = ()
LEASE_KEY = "leader"
# Checks at once. A source is checked one at a time per host, and sources that were slow (a check over SLOW_CHECK
# seconds, up to TUBEFLOW_CHECK_TIMEOUT) take at most all but one of these: a quick source always finds a free one
# (three trickling feeds starved every other subscription's check, issue 23).
CHECK_CONCURRENCY = 3
SLOW_CHECK = 20.0
TICK = 1.0
# After a check that failed for a reason of ours (NATS away), not before this many seconds again.
PAUSE_AFTER_TROUBLE = 5.0


class Scheduler:
    def __init__(
        self,
        book: SubscriptionBook,
        lease: Lease,
        checker: Checker,
        concurrency: int = CHECK_CONCURRENCY,
        cooldowns: Cooldowns | None = None,
    ):
        self._book, self._lease, self._checker = book, lease, checker
        self._cooldowns = cooldowns
        self._concurrency = concurrency
        self._running: dict[str, asyncio.Task] = {}
        self._hosts: dict[str, str] = {}  # running check -> its source's host
        self._slow: set[str] = set()  # subscriptions whose last check here was slow
        self._not_before: dict[str, float] = {}

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                self._book.changed.clear()
                if self._lease.held:
                    for view in due(self._book.all(), utcnow()):
                        if len(self._running) >= self._concurrency:
                            break
                        if view.id in self._running or self._not_before.get(view.id, 0.0) > loop.time():
                            continue
                        if not self._may_start(view):
                            continue
                        task = asyncio.create_task(self._check(view, stop))
                        self._running[view.id] = task
                        self._hosts[view.id] = _host(view)
                        task.add_done_callback(
                            lambda _t, sid=view.id: (self._running.pop(sid, None), self._hosts.pop(sid, None))
                        )
                # Woken by a stop, a subscription changed, a check done, or (not holding it) the lease gained.
                events = (
                    (stop, self._book.changed) if self._lease.held else (stop, self._book.changed, self._lease.gained)
                )
                waits = [asyncio.create_task(e.wait()) for e in events]
                if self._running:
                    waits.append(asyncio.create_task(asyncio.wait(set(self._running.values()))))
                _, pending = await asyncio.wait(waits, timeout=TICK, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
        finally:
            for task in list(self._running.values()):
                await cancel_until_done(task)

    def _may_start(self, view: SubscriptionView) -> bool:
        """One check at a time per host, none of a site cooling down, and the slow ones never all the slots."""
        if _host(view) in self._hosts.values():
            return False
        if self._cooldowns is not None and self._cooldowns.cooling(view.settings.url) is not None:
            return False
        if view.id in self._slow and self._concurrency > 1:
            return sum(sid in self._slow for sid in self._running) < self._concurrency - 1
        return True

    async def _check(self, view: SubscriptionView, stop: asyncio.Event) -> None:
        token = CancelToken(view.id, "check")
        started = asyncio.get_running_loop().time()

        async def watch() -> None:
            while not (stop.is_set() or self._lease.lost.is_set()):
                await asyncio.sleep(0.2)
            token.trip("the scheduler is stopping" if stop.is_set() else "the lease was lost")

        watcher = asyncio.create_task(watch())
        try:
            await self._checker.check(view, token)
        except Conflict:
            # Changed meanwhile (a person paused it, or another scheduler recorded this check): read it again.
            self._not_before[view.id] = asyncio.get_running_loop().time() + TICK
        except (Aborted, MediaError) as exc:
            log.info("subscription %s: check stopped: %s", view.id, exc)
        except Exception as exc:  # NATS away for a moment: the check is still due, and is tried again
            log.warning("subscription %s: check interrupted: %s", view.id, exc)
            self._not_before[view.id] = asyncio.get_running_loop().time() + PAUSE_AFTER_TROUBLE
        finally:
            watcher.cancel()
            if asyncio.get_running_loop().time() - started >= SLOW_CHECK:
                self._slow.add(view.id)
            else:
                self._slow.discard(view.id)


def _host(view: SubscriptionView) -> str:
    return (urlsplit(view.settings.url).hostname or "").lower()


async def run(settings: Settings, stop: asyncio.Event) -> None:
    executor = ThreadPoolExecutor(max_workers=CHECK_CONCURRENCY, thread_name_prefix="subscription-check")
    media = SlotPool(
        CHECK_CONCURRENCY,
        SlotConfig.from_settings(settings),
        resolve_timeout=min(settings.resolve_timeout, settings.check_timeout),
    )
    worker = worker_identity(settings)
    try:
        async with open_infrastructure(settings, "scheduler", stop=stop) as infra:
            book = SubscriptionBook()
            await book.start(infra.js)
            lease = Lease(await infra.js.key_value(SCHEDULER_BUCKET), LEASE_KEY, worker, settings.scheduler_lease)
            checker = Checker(
                book=book,
                js=infra.js,
                publisher=EventPublisher(infra.js),
                keys=await infra.js.key_value(IDEMPOTENCY_BUCKET),
                resolve=media.resolve,
                executor=executor,
                cookies=CookieStore(settings.data_dir),
                max_items=settings.max_playlist_items,
                worker=worker,
                now=utcnow,
                policy=settings.address_policy(),
                pacing=parse_pacing(settings.site_pacing),
                cooldowns=await Cooldowns(
                    infra.js, await infra.js.key_value(PACING_BUCKET), settings.cooldown_seconds(), worker
                ).start(infra.nc),
            )
            engines = await EngineFollower(infra.js, settings.engine_root(), [media], worker).start(infra.nc)
            done = asyncio.Event()
            keeping = asyncio.create_task(lease.keep(done))
            updating = asyncio.create_task(
                auto_update(
                    infra.js,
                    await infra.js.key_value(SCHEDULER_BUCKET),
                    settings.engine_root(),
                    worker,
                    settings.ytdlp_auto_update,
                    lambda: lease.held,
                    stop,
                )
            )
            try:
                await Scheduler(book, lease, checker, cooldowns=checker.cooldowns).run(stop)
            finally:
                done.set()  # the lease is handed over at once, not left to expire
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(keeping, 5.0)
                await book.stop()
                await engines.stop()
                await cancel_until_done(updating)
    finally:
        media.close()
        executor.shutdown(wait=False, cancel_futures=True)
