"""The scheduler's loop with fakes: it wakes when there is something to do (not in a spin: a lease held with nothing
due cost a whole core once), checks what is due once at a time per subscription, only while it holds the lease, and
a check stops when the lease is lost."""

from __future__ import annotations

import asyncio

from contracts.subscriptions import SubscriptionCreatedData, apply_subscription, make_subscription_event
from services.runtime.clock import utcnow
from services.scheduler.main import Scheduler


class FakeBook:
    def __init__(self, views=()) -> None:  # noqa: ANN001
        self.views = list(views)
        self.reads = 0
        self.changed = asyncio.Event()

    def all(self):  # noqa: ANN201
        self.reads += 1
        return list(self.views)


class FakeLease:
    def __init__(self, held: bool) -> None:
        self.held = held
        self.gained = asyncio.Event()
        self.lost = asyncio.Event()
        if held:
            self.gained.set()


class FakeChecker:
    def __init__(self, book: FakeBook, seconds: float = 0.0) -> None:
        self.book, self.seconds = book, seconds
        self.checked: list[str] = []
        self.tokens: list = []

    async def check(self, view, token):  # noqa: ANN001, ANN201
        self.tokens.append(token)
        self.checked.append(view.id)
        deadline = asyncio.get_running_loop().time() + self.seconds
        while token.reason is None and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        # Checked: not due again for an hour.
        self.book.views = [
            v.model_copy(update={"last_check_at": utcnow(), "checks": v.checks + 1}) for v in self.book.views
        ]
        self.book.changed.set()


def subscription(sid: str):  # noqa: ANN201
    data = SubscriptionCreatedData(url="http://127.0.0.1/feed.xml", interval=3600)
    return apply_subscription(None, make_subscription_event("created", sid, utcnow(), "e", data))


async def run_for(scheduler: Scheduler, seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_holding_the_lease_with_nothing_due_the_loop_sleeps():
    book = FakeBook()
    await run_for(Scheduler(book, FakeLease(held=True), FakeChecker(book)), 1.5)
    assert book.reads <= 3, f"the loop ran {book.reads} times in 1.5 s"


async def test_a_due_subscription_is_checked_once_and_only_by_the_lease_holder():
    book = FakeBook([subscription("sb1")])
    checker = FakeChecker(book)
    await run_for(Scheduler(book, FakeLease(held=False), checker), 0.5)
    assert checker.checked == []
    checker = FakeChecker(book)
    await run_for(Scheduler(book, FakeLease(held=True), checker), 1.0)
    assert checker.checked == ["sb1"]


async def test_a_check_running_when_the_lease_is_lost_is_stopped():
    book = FakeBook([subscription("sb1")])
    checker = FakeChecker(book, seconds=30)
    lease = FakeLease(held=True)
    stop = asyncio.Event()
    task = asyncio.create_task(Scheduler(book, lease, checker).run(stop))
    while not checker.tokens:
        await asyncio.sleep(0.02)
    lease.held = False
    lease.lost.set()
    for _ in range(100):
        if checker.tokens[0].reason:
            break
        await asyncio.sleep(0.02)
    assert checker.tokens[0].reason == "the lease was lost"
    stop.set()
    await asyncio.wait_for(task, 5)


class SlowChecker(FakeChecker):
    """Checks of the `slow` subscriptions take ``seconds``; the others are quick. Records when each started."""

    def __init__(self, book: FakeBook, slow: set[str], seconds: float) -> None:
        super().__init__(book, seconds)
        self.slow = slow
        self.started: dict[str, list[float]] = {}
        self.running: set[str] = set()
        self.most_at_once = 0

    async def check(self, view, token):  # noqa: ANN001, ANN201
        self.started.setdefault(view.id, []).append(asyncio.get_running_loop().time())
        self.running.add(view.id)
        self.most_at_once = max(self.most_at_once, len(self.running))
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + (self.seconds if view.id in self.slow else 0.0)
            while token.reason is None and loop.time() < deadline:
                await asyncio.sleep(0.02)
        finally:
            self.running.discard(view.id)
        # Due again at once (an interval of nothing, to see the next round quickly).
        self.book.changed.set()


def on_host(sid: str, host: str):  # noqa: ANN201
    data = SubscriptionCreatedData(url=f"http://{host}/feed.xml", interval=3600)
    return apply_subscription(None, make_subscription_event("created", sid, utcnow(), "e", data))


async def test_slow_sources_never_take_every_slot_and_one_host_one_check_at_a_time(monkeypatch):
    """Issue 23: three trickling feeds held the 3 check slots (each up to 600 s) and every other subscription
    waited. A source once slow takes at most all but one slot; sources of one host are checked one at a time."""
    import services.scheduler.main as scheduler_main

    monkeypatch.setattr(scheduler_main, "SLOW_CHECK", 0.3)
    slow = {"slow1", "slow2", "slow3", "slow4"}
    views = [on_host(s, f"{s}.example") for s in sorted(slow)]
    views += [on_host("same1", "busy.example"), on_host("same2", "busy.example"), on_host("quick", "quick.example")]
    book = FakeBook(views)
    checker = SlowChecker(book, slow | {"same1", "same2"}, seconds=0.8)
    scheduler = Scheduler(book, FakeLease(held=True), checker, concurrency=3)
    await run_for(scheduler, 4.0)
    # The quick source was checked again and again, also while slow ones were running, once they were known slow.
    assert len(checker.started.get("quick", [])) >= 5, checker.started
    assert checker.most_at_once <= 3
    # Two subscriptions of one host never ran at once.
    same = sorted(
        [(t, "1") for t in checker.started.get("same1", [])] + [(t, "2") for t in checker.started.get("same2", [])]
    )
    assert all(b[0] - a[0] >= 0.75 for a, b in zip(same, same[1:], strict=False) if a[1] != b[1]), same
