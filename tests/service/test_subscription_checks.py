"""Checks against one real NATS server, the resolver faked: two schedulers doing the same check at once (a paused
leader waking past its lease) record it once and make each entry's job once; a check begun and not recorded (its
scheduler died after making jobs) is done again without a second job; a person's change in between wins."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from nats.js.errors import NotFoundError

from contracts.options import DownloadOptions
from contracts.subjects import subject
from contracts.subscriptions import JobTemplate, SubscriptionCreatedData, make_subscription_event
from services.engine.media import Entry, Resolution
from services.runtime.addresses import AddressPolicy, parse_networks
from services.runtime.cancellation import CancelToken
from services.runtime.clock import utcnow
from services.runtime.cookies import CookieStore
from services.runtime.nats import IDEMPOTENCY_BUCKET, STREAM, EventPublisher
from services.runtime.sitelimits import parse_pacing
from services.runtime.subscriptions import Conflict, SubscriptionBook
from services.scheduler.checks import PACED_BATCH, Checker

ENTRIES = [Entry(n, f"http://127.0.0.1/media/{n}.mp4", f"Episode {n}", id=f"ep{n}") for n in (1, 2, 3)]
# What a hostile feed may list besides: never a job.
REFUSED = [
    Entry(4, "file:///etc/passwd", "local file", id="f"),
    Entry(5, "http://169.254.169.254/latest/meta-data/", "metadata", id="m"),
    Entry(6, "gopher://127.0.0.1/", "gopher", id="g"),
]


async def checker(  # noqa: ANN201
    js,  # noqa: ANN001
    tmp_path,  # noqa: ANN001
    name: str,
    gate: asyncio.Event | None = None,
    entries: list[Entry] | None = None,
    pacing: str | None = None,
    images: tuple[str | None, str | None] = (None, None),
) -> tuple[Checker, SubscriptionBook]:
    book = SubscriptionBook()
    await book.start(js)
    loop = asyncio.get_running_loop()

    def resolve(url: str, **_: object) -> Resolution:
        if gate is not None:
            asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(10)
        return Resolution("playlist", "A feed", entries or [*ENTRIES, *REFUSED], False, images=images)

    made = Checker(
        book=book,
        js=js,
        publisher=EventPublisher(js),
        keys=await js.key_value(IDEMPOTENCY_BUCKET),
        resolve=resolve,
        executor=ThreadPoolExecutor(2),
        cookies=CookieStore(tmp_path),
        max_items=100,
        worker=name,
        now=utcnow,
        policy=AddressPolicy(False, parse_networks("127.0.0.0/8")),
        pacing=parse_pacing(pacing),
    )
    return made, book


async def requested_count(js, job_ids: set[str]) -> int:  # noqa: ANN001
    found = 0
    for job_id in job_ids:
        try:
            await js.get_last_msg(STREAM, subject(job_id, "requested"))
            found += 1
        except NotFoundError:
            pass
    return found


async def created(book: SubscriptionBook, **settings: object) -> str:
    event = make_subscription_event(
        "created",
        "sb" + "1" * 26,
        utcnow(),
        "c1",
        SubscriptionCreatedData(url="http://127.0.0.1/feed.xml", interval=600, **settings),
    )
    return (await book.publish(event, None)).id


async def test_two_schedulers_doing_the_same_check_record_it_once_and_make_each_job_once(js, tmp_path):
    gate = asyncio.Event()
    first, book_a = await checker(js, tmp_path, "a", gate)
    second, book_b = await checker(js, tmp_path, "b", gate)
    sid = await created(book_a)
    while book_b.get(sid) is None:
        await asyncio.sleep(0.02)
    # Both read the subscription as it is, then both resolve and make jobs before either records the check.
    runs = [asyncio.create_task(c.check(b.get(sid), CancelToken(sid))) for c, b in ((first, book_a), (second, book_b))]
    await asyncio.sleep(0.2)
    gate.set()
    results = await asyncio.gather(*runs, return_exceptions=True)
    assert sum(isinstance(r, Conflict) for r in results) == 1, results
    [recorded] = [r for r in results if not isinstance(r, Exception)]
    assert recorded.checks == 1 and recorded.new_items == 3 and recorded.seen == {"ep1", "ep2", "ep3"}
    assert [recorded.last_new[n].url for n in range(3)] == [e.url for e in ENTRIES]
    jobs = {e.job_id for e in recorded.last_new}
    assert len(jobs) == 3 and await requested_count(js, jobs) == 3
    # The stream holds one `requested` per job (not two): every event of those jobs.
    info = await js.stream_info(STREAM)
    assert info.state.messages == 3
    await book_a.stop()
    await book_b.stop()


async def test_a_check_redone_after_its_scheduler_died_finds_the_same_jobs(js, tmp_path):
    dead, book = await checker(js, tmp_path, "dead")
    sid = await created(book)
    view = book.get(sid)
    # The dead one made the jobs of two entries, then died before recording anything.
    made = [await dead._ensure_job(view, entry) for entry in ENTRIES[:2]]
    successor, book2 = await checker(js, tmp_path, "successor")
    while book2.get(sid) is None:
        await asyncio.sleep(0.02)
    recorded = await successor.check(book2.get(sid), CancelToken(sid))
    jobs = [e.job_id for e in recorded.last_new]
    assert jobs[:2] == made and len(set(jobs)) == 3
    assert (await js.stream_info(STREAM)).state.messages == 3
    # A person paused it meanwhile (the dead one's view is old): its late `checked` is refused.
    pause = make_subscription_event("paused", sid, utcnow(), "p1")
    await book2.publish(pause, recorded)
    with pytest.raises(Conflict):
        await dead.check(view, CancelToken(sid))
    await book.stop()
    await book2.stop()


async def test_a_paced_sites_backlog_becomes_jobs_a_batch_at_a_time_at_its_pace(js, tmp_path):
    """Issue 27: a first check of a large channel on a paced site queues a batch, says how many remain and when the
    next batch comes (the mean gap per job made), and the next check takes the next batch; unpaced, all at once."""
    backlog = [Entry(n, f"http://127.0.0.1/media/{n}.mp4", f"Episode {n}", id=f"ep{n}") for n in range(1, 26)]
    paced, book = await checker(js, tmp_path, "a", entries=backlog, pacing="127.0.0.1=downloads:1-3s")
    sid = await created(book)
    before = utcnow()
    view = await paced.check(book.get(sid), CancelToken(sid))
    assert len(view.last_new) == PACED_BATCH and view.remaining == 25 - PACED_BATCH
    wait = (view.next_batch_at - before).total_seconds()
    assert PACED_BATCH * 2.0 <= wait <= PACED_BATCH * 2.0 + 5, wait  # 10 jobs x 2 s, not the 600 s interval
    assert view.next_check_at == view.next_batch_at
    public = view.public()
    assert public.remaining == 15 and public.next_batch_at == view.next_batch_at
    view = await paced.check(view, CancelToken(sid))
    view = await paced.check(view, CancelToken(sid))
    assert view.new_items == 25 and view.remaining == 0 and view.next_batch_at is None
    assert (view.next_check_at - view.last_check_at).total_seconds() == 600  # the interval again
    await book.stop()
    # Another site, not paced: the backlog at once (up to max_items_per_check).
    unpaced, book2 = await checker(js, tmp_path, "b", entries=backlog, pacing="example.com=downloads:1-3s")
    other = make_subscription_event(
        "created",
        "sb" + "2" * 26,
        utcnow(),
        "c2",
        SubscriptionCreatedData(url="http://127.0.0.1/other.xml", interval=600),
    )
    made = await book2.publish(other, None)
    view = await unpaced.check(made, CancelToken(made.id))
    assert len(view.last_new) == 25 and view.next_batch_at is None
    await book2.stop()


async def test_a_followed_show_gets_the_source_s_title_and_images_unless_its_template_names_them(js, tmp_path):
    images = ("http://127.0.0.1/avatar.jpg", "http://127.0.0.1/banner.jpg")
    check, book = await checker(js, tmp_path, "a", images=images)
    job = JobTemplate(options=DownloadOptions(library={"kind": "show", "fanart": "http://127.0.0.1/mine.jpg"}))
    sid = await created(book, job=job)
    recorded = await check.check(book.get(sid), CancelToken(sid))
    for entry in recorded.last_new:
        message = await js.get_last_msg(STREAM, subject(entry.job_id, "requested"))
        library = json.loads(message.data)["data"]["options"]["library"]
        assert library == {
            "kind": "show",
            "nfo": True,
            "artwork": True,
            "show": "A feed",
            "poster": "http://127.0.0.1/avatar.jpg",
            "fanart": "http://127.0.0.1/mine.jpg",
        }
    await book.stop()
