"""The projector against a real NATS server: redelivered batches and competing projectors still give exactly the
fold of the stream; re-published events are deduplicated by their id."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from contracts import events as ev
from contracts.fold import fold
from contracts.ids import new_job_id
from contracts.views import JobSummary, JobView
from services.progress.projector import SMALL_VIEW, Projector
from services.runtime.nats import EventPublisher, jobs_bucket, read_job_events
from services.runtime.nats.views import PAGE_SIZE, load
from tests.support.events import events_of

T0 = datetime(2026, 11, 22, tzinfo=timezone.utc)
W = "test:1"


def history(job: str, items: int = 3) -> list[ev.Envelope]:
    out: list[tuple[str, ev.Payload, str | None]] = [
        ("requested", ev.Requested(url="http://example.com/list", mode="both"), None),
        ("resolve.started", ev.ResolveStarted(worker=W), None),
        ("resolved", ev.Resolved(kind="playlist", item_count=items, worker=W), None),
    ]
    for i in range(1, items + 1):
        iid = f"{i:04d}"
        out += [
            (
                "item.queued",
                ev.ItemQueued(index=i, url=f"http://example.com/{i}", mode="both", audio_format="mp3"),
                iid,
            ),
            ("download.started", ev.DownloadStarted(worker=W), iid),
            ("download.progress", ev.DownloadProgress(worker=W, downloaded_bytes=50, total_bytes=100), iid),
            (
                "download.completed",
                ev.DownloadCompleted(worker=W, file=f"{iid}.mp4", size=100, audio_format="mp3"),
                iid,
            ),
            ("extract.started", ev.ExtractStarted(worker=W, audio_format="mp3"), iid),
            ("extract.completed", ev.ExtractCompleted(worker=W, file=f"{iid}.mp3", size=10), iid),
        ]
    return events_of(job, out, start=T0, spacing=timedelta(seconds=1))


async def stored_view(js, job: str) -> JobView:
    stored = await load(await jobs_bucket(js), job)
    assert stored is not None and stored.consistent
    return stored.view()


async def test_redelivered_batches_change_nothing(js):
    job = new_job_id()
    publisher = EventPublisher(js)
    for event in history(job):
        ack = await publisher.publish(event)
        assert not ack.duplicate
    again = await publisher.publish(history(job)[4])
    assert again.duplicate, "a re-published event with the same id must be dropped by JetStream"

    stored = await read_job_events(js, job)
    assert len(stored) == len(history(job))
    projector = Projector(await jobs_bucket(js))
    await projector.project(stored[:7])
    await projector.project(stored[:12])  # a crash before the ack: the batch comes again, overlapping
    await projector.project(stored[5:])
    expected = fold(s.event for s in stored)
    assert await stored_view(js, job) == expected
    assert expected.status == "completed" and expected.seq == stored[-1].seq


async def test_two_projectors_racing_still_write_the_fold(js):
    job = new_job_id()
    publisher = EventPublisher(js)
    for event in history(job, items=4):
        await publisher.publish(event)
    stored = await read_job_events(js, job)
    kv = await jobs_bucket(js)
    first, second = Projector(kv), Projector(kv)
    # Each holds a cached view the other makes stale: the compare-and-set write notices and re-folds.
    for start in range(0, len(stored), 5):
        await first.project(stored[start : start + 5])
        await second.project(stored[max(0, start - 2) : start + 7])  # overlaps behind, runs ahead
    await second.project(stored)
    assert first.conflicts + second.conflicts > 0, "the race was not exercised"
    assert await stored_view(js, job) == fold(s.event for s in stored)


async def test_unreadable_events_are_skipped_not_fatal(js):
    job = new_job_id()
    await js.publish(ev.subject(job, "download.progress"), b"\xff not json")
    for event in history(job, items=1):
        await EventPublisher(js).publish(event)
    stored = await read_job_events(js, job)
    assert stored[0].event is None and stored[0].error
    projector = Projector(await jobs_bucket(js))
    await projector.project(stored)
    assert projector.skipped == 1
    assert (await stored_view(js, job)).status == "completed"


async def test_a_big_view_is_held_then_written_once_and_a_conflict_refolds_what_was_held(js):
    job = new_job_id()
    publisher = EventPublisher(js)
    for event in history(job, items=SMALL_VIEW + 20):
        await publisher.publish(event)
    stored = await read_job_events(js, job)
    kv = await jobs_bucket(js)
    holder, other = Projector(kv), Projector(kv)
    await holder.project(stored[:3])  # requested .. resolved: a small view, written at once
    assert not holder.dirty and holder.write_delay() == 0.0

    cut = len(stored) // 2
    for start in range(3, cut, 50):  # many batches folded, nothing written
        await holder.fold(stored[start : min(start + 50, cut)])
    assert holder.dirty and holder.write_delay() > 0
    assert (await stored_view(js, job)).seq == stored[2].seq, "a held view was written before its flush"

    # Meanwhile another replica writes further: the holder's write conflicts, so it folds what it held (and the
    # other already has) onto the newer view instead of overwriting it.
    await other.project(stored[: cut + 10])
    await holder.flush()
    assert holder.conflicts >= 1 and not holder.dirty
    assert await stored_view(js, job) == fold(s.event for s in stored[: cut + 10])

    await holder.project(stored[cut:])
    assert await stored_view(js, job) == fold(s.event for s in stored)


async def test_a_view_too_big_for_a_message_is_cut_the_job_fails_and_the_others_are_written(js):
    big, small = new_job_id(), new_job_id()
    publisher = EventPublisher(js)
    for event in history(big, items=60) + history(small, items=2):
        await publisher.publish(event)
    stored = sorted(await read_job_events(js, big) + await read_job_events(js, small), key=lambda s: s.seq)
    cuts: list[tuple[str, int, str]] = []

    async def on_cut(job_id, events, reason):  # noqa: ANN001
        cuts.append((job_id, len(events), reason))

    # 60 items make a page of ~40 KB; 16 KiB (less the headroom) holds the summary, not the page.
    projector = Projector(await jobs_bucket(js), max_payload=16 * 1024, on_cut=on_cut)
    await projector.project(stored[: len(stored) // 2])
    await projector.project(stored[len(stored) // 2 :])
    cut = await stored_view(js, big)
    assert cut.status == "failed" and cut.error is not None and cut.error.code == "view_too_large"
    assert len(cut.items) < 60
    assert [job for job, _, _ in cuts] == [big], "one report, when the view was first cut"
    # Every other job's view is written as usual; the cut one takes nothing more (its events are skipped).
    assert await stored_view(js, small) == fold(s.event for s in stored if s.event.job_id == small)
    assert projector.skipped > 0
    # A fresh projector (a restart) leaves the cut view as it is.
    again = Projector(await jobs_bucket(js), max_payload=16 * 1024, on_cut=on_cut)
    await again.project(stored)
    assert await stored_view(js, big) == cut and len(cuts) == 1


def test_text_strangers_control_is_cut_with_a_marker():
    long = "x" * 5000
    queued = ev.ItemQueued(index=1, url="http://e/1", title=long, mode="video", audio_format="mp3")
    failed = ev.DownloadFailed(worker=long, code=long, message=long)
    assert len(queued.title) == ev.TITLE_MAX and queued.title.endswith(ev.TRUNCATED)
    assert len(failed.message) == ev.MESSAGE_MAX and len(failed.code) == ev.SHORT_MAX
    assert ev.ItemQueued(index=1, url="http://e/1", title="short", mode="video", audio_format="mp3").title == "short"


def test_a_thousand_items_with_long_titles_fit_in_one_message_once_titles_are_cut():
    job = new_job_id()
    events = history(job, items=1000)
    long_titled = [
        e.model_copy(update={"data": e.data.model_validate({**e.data.model_dump(), "title": "t" * 1500})})
        if e.type == "item.queued"
        else e
        for e in events
    ]
    view = fold(long_titled)
    assert all(len(item.title or "") == ev.TITLE_MAX for item in view.items)
    # The items are stored in pages, one message each (services/runtime/nats/views.py).
    for start in range(0, len(view.items), PAGE_SIZE):
        page = view.model_copy(update={"items": view.items[start : start + PAGE_SIZE]})
        assert len(page.model_dump_json()) < 1024 * 1024 - 8 * 1024


async def stored_history(js, items: int):  # noqa: ANN201
    """A new job's history published: its id, its stored events and the read-model bucket."""
    job = new_job_id()
    for event in history(job, items=items):
        await EventPublisher(js).publish(event)
    return job, await read_job_events(js, job), await jobs_bucket(js)


async def test_a_big_job_is_stored_in_pages_and_only_changed_pages_are_written(js):
    job, stored, kv = await stored_history(js, items=250)
    projector = Projector(kv)
    # All but the last item's extraction first.
    await projector.project(stored[:-2])
    summary = (await kv.get(job)).value
    assert b'"items"' not in summary and len(summary) < 4096
    pages = [(await kv.get(f"{job}.p{n}")).value for n in range(3)]
    assert [p.count(b'"index":') for p in pages] == [PAGE_SIZE, PAGE_SIZE, 50]
    # The last item's extraction: its page and the summary are written, the other pages are not.
    revisions = [(await kv.get(f"{job}.p{n}")).revision for n in range(3)]
    await projector.project(stored[-2:])
    after = [(await kv.get(f"{job}.p{n}")).revision for n in range(3)]
    assert after[:2] == revisions[:2] and after[2] != revisions[2]
    assert await stored_view(js, job) == fold(s.event for s in stored)


async def test_a_cut_job_is_dead_lettered_and_cancelled(js):
    from services.progress.main import stop_cut_job
    from services.runtime.nats import DLQ_STREAM, STREAM

    job = new_job_id()
    for event in history(job, items=1):
        await EventPublisher(js).publish(event)
    stored = await read_job_events(js, job)
    await stop_cut_job(js)(job, [s.event for s in stored], "too big")
    dead = await js.get_last_msg(DLQ_STREAM, "tubeflow.dlq.progress")
    assert dead.headers["Tubeflow-Dlq-Reason"].startswith("view_too_large")
    cancel = await js.get_last_msg(STREAM, ev.subject(job, "cancel.requested"))
    assert ev.parse_event(cancel.data).data.reason == "view_too_large"


@pytest.mark.parametrize("items", [0, 1, 99, 100, 101, 250])
def test_the_stored_parts_put_together_are_exactly_the_views_own_json(items):
    from services.runtime.nats.views import item_pages, page_bytes, page_count, split_page, summary_bytes, view_bytes

    job = new_job_id()
    view = fold(history(job, items=items)[: 3 + 4 * items])  # items part-way: downloads done, extractions not
    summary = summary_bytes(view)
    assert item_pages(summary) == page_count(len(view.items))
    assert JobSummary.model_validate_json(summary) == view.summary()
    arrays = [split_page(page_bytes(view, n))[1] for n in range(item_pages(summary))]
    assert view_bytes(summary, arrays) == view.model_dump_json().encode()


async def test_a_small_job_is_one_value_and_becomes_paged_when_it_grows(js):
    job, stored, kv = await stored_history(js, items=150)
    projector = Projector(kv)
    queued_80 = next(n for n, s in enumerate(stored) if s.event.type == "item.queued" and s.event.data.index == 81)
    await projector.project(stored[:queued_80])
    small = (await kv.get(job)).value
    assert b'"items":[' in small and b"item_pages" not in small  # one value, as JobView writes it
    assert await stored_view(js, job) == fold(s.event for s in stored[:queued_80])
    await projector.project(stored[queued_80:])
    big = (await kv.get(job)).value
    assert b'"items"' not in big and b'"item_pages":2}' in big
    assert await stored_view(js, job) == fold(s.event for s in stored)
