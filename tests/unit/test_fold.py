"""The fold: hypothesis properties over any valid sequence of events, and a few concrete scenarios."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import events as ev
from contracts.fold import apply, fold
from contracts.ids import item_id
from contracts.items import item_fraction, wants_audio
from contracts.views import JobView

JOB = "01m80kr9ngrx981wzxbmtbw7d3"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
WORKER = "host:1"


def _event(kind: str, data: ev.Payload, item: str | None = None) -> ev.Envelope:
    return ev.make_event(kind, job_id=JOB, item_id=item, data=data, occurred_at=T0, event_id="x")


@st.composite
def live_script(draw, iid: str) -> list[ev.Envelope]:
    """A live stream recorded: bytes and seconds with no total, then the file (stopped early or at the stream's
    end) or a failure."""
    out = [_event("download.started", ev.DownloadStarted(worker=WORKER, attempt=1), iid)]
    recorded = 0
    for step in range(draw(st.integers(min_value=0, max_value=4))):
        recorded += draw(st.integers(min_value=0, max_value=100_000))
        report = ev.DownloadProgress(worker=WORKER, downloaded_bytes=recorded, recorded_seconds=float(step), speed=1.0)
        out.append(_event("download.progress", report, iid))
    if draw(st.integers(0, 4)) == 0:
        out.append(
            _event("download.failed", ev.DownloadFailed(worker=WORKER, code="recording_failed", message="x"), iid)
        )
    else:
        done = ev.DownloadCompleted(
            worker=WORKER, file=f"{iid}.mkv", size=max(1, recorded), stopped_early=draw(st.booleans())
        )
        out.append(_event("download.completed", done, iid))
    return out


@st.composite
def item_script(draw, index: int, audio: bool) -> list[ev.Envelope]:
    """One item's events in their causal order: attempts with progress, then an outcome, then extraction."""
    iid = item_id(index)
    if draw(st.integers(0, 7)) == 0:
        return draw(live_script(iid))
    size = draw(st.integers(min_value=1, max_value=10_000_000))
    out: list[ev.Envelope] = []
    attempts = draw(st.integers(min_value=1, max_value=3))
    streams = draw(st.integers(min_value=1, max_value=3))  # the same formats on every attempt
    for attempt in range(1, attempts + 1):
        out.append(_event("download.started", ev.DownloadStarted(worker=WORKER, attempt=attempt), iid))
        if attempt > 1:
            out.insert(
                len(out) - 1,
                _event(
                    "download.retrying",
                    ev.DownloadRetrying(worker=WORKER, attempt=attempt - 1, code="http_503", message="x", delay=1.0),
                    iid,
                ),
            )
        out.extend(draw(stream_reports(iid, size, streams)))
    pp_failed = False
    names = draw(st.lists(st.sampled_from(["Merger", "FixupM3u8", "Metadata", "EmbedThumbnail"]), max_size=3))
    # The plan may be missing (older events), or short of what runs (a step yt-dlp added late).
    planned = draw(st.none() | st.integers(min_value=1, max_value=4))
    total = draw(st.none() | st.floats(min_value=0.1, max_value=10_000))
    for step, name in enumerate(names, start=1):
        place = {"step": step, "steps": planned} if planned else {}
        out.append(_event("postprocess.started", ev.PostprocessStarted(worker=WORKER, name=name, **place), iid))
        for seconds in sorted(draw(st.lists(st.floats(min_value=0, max_value=12_000), max_size=4))):
            report = ev.PostprocessProgress(
                worker=WORKER, name=name, seconds=seconds, total_seconds=total, speed=2.0, **place
            )
            out.append(_event("postprocess.progress", report, iid))
        if draw(st.integers(0, 9)) == 0:
            failed = ev.PostprocessFailed(worker=WORKER, name=name, code="merge_failed", message="x")
            out.append(_event("postprocess.failed", failed, iid))
            pp_failed = True
            break
        out.append(_event("postprocess.completed", ev.PostprocessCompleted(worker=WORKER, name=name), iid))
    if not pp_failed and (draw(st.booleans()) or not draw(st.booleans())):
        out.append(_event("download.completed", ev.DownloadCompleted(worker=WORKER, file=f"{iid}.mp4", size=size), iid))
        if audio:
            out.append(_event("extract.started", ev.ExtractStarted(worker=WORKER, audio_format="mp3"), iid))
            for pct in sorted(draw(st.lists(st.floats(min_value=0, max_value=100), max_size=5))):
                out.append(_event("extract.progress", ev.ExtractProgress(worker=WORKER, percent=pct), iid))
            if draw(st.booleans()) or draw(st.booleans()):
                out.append(
                    _event("extract.completed", ev.ExtractCompleted(worker=WORKER, file=f"{iid}.mp3", size=9), iid)
                )
            else:
                out.append(
                    _event("extract.failed", ev.ExtractFailed(worker=WORKER, code="ffmpeg_error", message="x"), iid)
                )
    else:
        out.append(
            _event(
                "download.failed",
                ev.DownloadFailed(worker=WORKER, code="http_404", message="gone", attempt=attempts),
                iid,
            )
        )
    return out


@st.composite
def stream_reports(draw, iid: str, size: int, streams: int) -> list[ev.Envelope]:
    """Progress of one attempt as the downloader reports it: one stream, or several (video and audio apart) whose
    bytes add up, with totals that may be estimates that change, and fragment counts for fragmented streams."""
    sizes = [max(1, size // streams)] * streams
    fragmented = draw(st.booleans())
    known_total = draw(st.booleans())
    out = []
    for index, stream_size in enumerate(sizes, start=1):
        before = sum(sizes[: index - 1])
        later = sum(sizes[index:])
        for done in sorted(draw(st.lists(st.integers(min_value=0, max_value=stream_size), max_size=3))):
            estimate = (
                draw(st.integers(min_value=max(1, done), max_value=2 * stream_size)) if fragmented else stream_size
            )
            fragments = 10 if fragmented else None
            out.append(
                _event(
                    "download.progress",
                    ev.DownloadProgress(
                        worker=WORKER,
                        downloaded_bytes=before + done,
                        total_bytes=before + estimate + later if known_total or fragmented else None,
                        speed=draw(st.none() | st.floats(min_value=0, max_value=1e7)),
                        eta=draw(st.none() | st.floats(min_value=0, max_value=1e4)),
                        fragment_index=(10 * done) // stream_size if fragmented else None,
                        fragment_count=fragments,
                        stream_index=index if streams > 1 else None,
                        stream_count=streams if streams > 1 else None,
                        stream_kind=("video" if index == 1 else "audio") if streams > 1 else None,
                    ),
                    iid,
                )
            )
    return out


@st.composite
def job_history(draw) -> list[ev.Envelope]:
    """A whole job: requested, resolving, then items' scripts interleaved at random (each item's order kept)."""
    mode = draw(st.sampled_from(["video", "audio", "both"]))
    audio = mode != "video"
    out = [_event("requested", ev.Requested(url="http://example.com/v", mode=mode))]
    out.append(_event("resolve.started", ev.ResolveStarted(worker=WORKER)))
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        out.append(_event("resolve.failed", ev.ResolveFailed(code="unsupported_url", message="no", worker=WORKER)))
        return _sequence(out)
    count = draw(st.integers(min_value=1, max_value=5))
    out.append(
        _event("resolved", ev.Resolved(kind="playlist" if count > 1 else "video", item_count=count, worker=WORKER))
    )
    scripts = []
    for index in range(1, count + 1):
        queued = _event(
            "item.queued",
            ev.ItemQueued(index=index, url=f"http://example.com/{index}", mode=mode, audio_format="mp3"),
            item_id(index),
        )
        # Not every item necessarily gets to run within the history we look at.
        steps = draw(item_script(index, audio)) if draw(st.integers(0, 5)) else []
        scripts.append([queued, *steps])
    while any(scripts):
        pick = draw(st.sampled_from([s for s in scripts if s]))
        out.append(pick.pop(0))
    if draw(st.integers(min_value=0, max_value=5)) == 0:
        # A cancel at any point after the job was resolved; later events are stragglers from running work.
        at = draw(st.integers(min_value=3, max_value=len(out)))
        out.insert(at, _event("cancel.requested", ev.CancelRequested()))
    return _sequence(out)


def _sequence(events: list[ev.Envelope]) -> list[ev.Envelope]:
    return [
        e.model_copy(update={"seq": n, "occurred_at": T0 + timedelta(seconds=n), "event_id": f"e{n}"})
        for n, e in enumerate(events, start=1)
    ]


def _views(events: list[ev.Envelope]) -> list[JobView]:
    views, view = [], None
    for event in events:
        view = apply(view, event)
        views.append(view)
    return views


def _without_sequence(view: JobView) -> dict:
    data = view.model_dump(exclude={"seq", "updated_at"})
    for item in data["items"]:
        item.pop("seq")
    return data


@settings(max_examples=300, deadline=None)
@given(job_history())
def test_percent_stays_in_range_never_decreases_and_is_100_only_at_the_end(events):
    views = _views(events)
    percents = [v.progress.percent for v in views]
    assert all(0.0 <= p <= 100.0 for p in percents)
    assert percents == sorted(percents)
    for view in views:
        assert (view.progress.percent == 100.0) == (view.status in ("completed", "partial", "failed"))


@settings(max_examples=300, deadline=None)
@given(job_history())
def test_every_items_share_never_decreases_and_post_processing_moves_it(events):
    views = _views(events)
    audio = wants_audio(views[-1].mode)
    before: dict[str, float] = {}
    for view in views:
        for item in view.items:
            share = item_fraction(item, audio)
            assert share >= before.get(item.id, 0.0) - 1e-9, (item.id, item.postprocess)
            before[item.id] = share
            pp = item.postprocess
            assert 0.0 <= pp.overall <= 100.0
            assert pp.overall < 100.0 or item.download.status == "completed"
            if pp.percent is not None:
                assert 0.0 <= pp.percent <= 100.0


def test_post_processing_progress_moves_the_bar_through_its_share():
    iid = "0001"
    view = fold(
        _sequence(
            [
                _event("requested", ev.Requested(url="http://example.com/v")),
                _event("resolved", ev.Resolved(kind="video", item_count=1, worker=WORKER)),
                _event("item.queued", ev.ItemQueued(index=1, url="u", mode="video", audio_format="mp3"), iid),
                _event("download.progress", ev.DownloadProgress(worker=WORKER, downloaded_bytes=9, total_bytes=9), iid),
            ]
        )
    )
    merger = {"worker": WORKER, "name": "Merger", "step": 1, "steps": 2}
    view = apply(view, _event("postprocess.started", ev.PostprocessStarted(**merger), iid))
    assert view.items[0].postprocess.label == "merging video and audio"
    shares = [item_fraction(view.items[0], False)]
    for seconds in (10.0, 40.0, 90.0):
        report = ev.PostprocessProgress(**merger, seconds=seconds, total_seconds=100.0, speed=3.0)
        view = apply(view, _event("postprocess.progress", report, iid))
        shares.append(item_fraction(view.items[0], False))
    assert view.items[0].postprocess.percent == 90.0
    assert view.items[0].postprocess.overall == 45.0
    # A late report of a lower value moves nothing back.
    late = ev.PostprocessProgress(**merger, seconds=20.0, total_seconds=100.0)
    assert apply(view, _event("postprocess.progress", late, iid)).items[0].postprocess.percent == 90.0
    view = apply(view, _event("postprocess.completed", ev.PostprocessCompleted(worker=WORKER, name="Merger"), iid))
    shares.append(item_fraction(view.items[0], False))
    assert view.items[0].postprocess.overall == 50.0
    assert shares == sorted(shares) and len(set(shares)) == len(shares)
    # 90 % of the download step is the bytes (all there), the rest post-processing: half done.
    assert abs(shares[-1] - 0.95) < 1e-9


@settings(max_examples=300, deadline=None)
@given(job_history())
def test_counters_always_add_up_to_the_total(events):
    for view in _views(events):
        d, x = view.download, view.extract
        assert d.completed + d.failed + d.skipped + d.remaining == d.total
        assert x.completed + x.failed + x.skipped + x.remaining == x.total
        if view.mode == "video":
            assert x.total == 0
        assert d.bytes_done <= d.bytes_total


@settings(max_examples=300, deadline=None)
@given(job_history())
def test_applying_an_event_twice_changes_nothing(events):
    view = None
    for event in events:
        view = apply(view, event)
        assert apply(view, event) is view  # a redelivery: same stream sequence
        again = apply(view, event.model_copy(update={"seq": view.seq + 1}))  # a re-publish that escaped dedupe
        assert _without_sequence(again) == _without_sequence(view)


@settings(max_examples=200, deadline=None)
@given(job_history(), st.data())
def test_replay_of_a_prefix_equals_the_live_view_at_that_sequence(events, data):
    # "Live" is the projector: batches of any size, with batches redelivered after a crash.
    live = None
    position = 0
    snapshots = {}
    while position < len(events):
        size = data.draw(st.integers(min_value=1, max_value=8))
        batch = events[position : position + size]
        for event in batch:
            live = apply(live, event)
        if data.draw(st.booleans()):
            for event in events[max(0, position - 3) : position + size]:
                live = apply(live, event)
        position += len(batch)
        snapshots[live.seq] = live
    for seq, view in snapshots.items():
        assert fold(e for e in events if e.seq <= seq) == view


@settings(max_examples=200, deadline=None)
@given(job_history())
def test_a_finished_history_ends_in_the_right_status(events):
    view = fold(events)
    if any(e.type == "cancel.requested" for e in events) and view.status == "cancelled":
        assert view.progress.percent < 100 and view.error.code == "cancelled"
        assert all(i.status in ("completed", "failed", "skipped") for i in view.items)
        return
    if view.status == "failed" and view.item_count is None:
        assert view.error is not None and view.error.code == "unsupported_url"
        return
    # Skipped items are done too: a cancel that came while a live stream recorded skips the waiting items and lets
    # the job end when the recording is a file.
    items_done = len(view.items) == view.item_count and all(
        i.status in ("completed", "failed", "skipped") for i in view.items
    )
    if not items_done:
        assert view.status == "running" and view.finished_at is None
        return
    succeeded = sum(i.status == "completed" for i in view.items)
    expected = "completed" if succeeded == len(view.items) else "failed" if succeeded == 0 else "partial"
    assert view.status == expected
    assert view.finished_at is not None
    if expected == "failed":
        assert view.error is not None


def test_stage_weighted_progress_for_audio_jobs():
    events = _sequence(
        [
            _event("requested", ev.Requested(url="http://example.com/v", mode="both")),
            _event("resolved", ev.Resolved(kind="video", item_count=1, worker=WORKER)),
            _event("item.queued", ev.ItemQueued(index=1, url="u", mode="both", audio_format="mp3"), "0001"),
            _event(
                "download.progress", ev.DownloadProgress(worker=WORKER, downloaded_bytes=50, total_bytes=100), "0001"
            ),
            _event("download.completed", ev.DownloadCompleted(worker=WORKER, file="f.mp4", size=100), "0001"),
            _event("extract.started", ev.ExtractStarted(worker=WORKER, audio_format="mp3"), "0001"),
            _event("extract.progress", ev.ExtractProgress(worker=WORKER, percent=50), "0001"),
            _event("extract.completed", ev.ExtractCompleted(worker=WORKER, file="f.mp3", size=10), "0001"),
        ]
    )
    views = _views(events)
    # Download 80 (of which post-processing 10 %: 72 for the bytes), extraction 20.
    assert [v.progress.percent for v in views] == [0, 0, 0, 36.0, 80.0, 80.0, 90.0, 100.0]
    assert [v.progress.stage for v in views][-4:] == ["extracting", "extracting", "extracting", "done"]
    assert views[3].items[0].download.percent == 50.0
    assert views[-1].items[0].extract.file == "f.mp3" and views[-1].status == "completed"


def test_late_events_after_the_end_change_nothing_but_the_sequence():
    events = _sequence(
        [
            _event("requested", ev.Requested(url="http://example.com/v")),
            _event("resolved", ev.Resolved(kind="video", item_count=1, worker=WORKER)),
            _event("item.queued", ev.ItemQueued(index=1, url="u", mode="video", audio_format="mp3"), "0001"),
            _event("download.completed", ev.DownloadCompleted(worker=WORKER, file="f.mp4", size=100), "0001"),
            _event(
                "download.progress", ev.DownloadProgress(worker=WORKER, downloaded_bytes=5, total_bytes=100), "0001"
            ),
        ]
    )
    views = _views(events)
    assert views[3].status == "completed"
    assert _without_sequence(views[4]) == _without_sequence(views[3]) and views[4].seq == 5


@settings(max_examples=300, deadline=None)
@given(job_history())
def test_item_bars_never_go_back_and_reach_100_only_with_the_last_stream(events):
    """Within a run an item's download bar never decreases, over all of its streams and however the size estimates
    change; it gets to 100 only when the last stream's bytes are all there (or the download completed)."""
    views = _views(events)
    seen: dict[str, float] = {}
    for view in views:
        for item in view.items:
            percent = item.download.percent
            if percent is None:  # a live recording (or one that failed): bytes and seconds, no made-up percent
                assert item.download.recorded_seconds is not None and item.download.status != "completed"
                continue
            assert 0.0 <= percent <= 100.0
            assert percent >= seen.get(item.id, 0.0), (item.id, seen.get(item.id), percent)
            reached = percent == 100.0 and seen.get(item.id, 0.0) < 100.0
            seen[item.id] = percent
            if reached and item.download.status != "completed":
                assert item.download.stream_index is None or item.download.stream_index == item.download.stream_count
            if item.status == "processing":
                assert item.postprocess.status in ("running", "completed", "failed")
                assert item.download.status not in ("completed", "failed", "skipped")


@settings(max_examples=200, deadline=None)
@given(job_history())
def test_a_failed_post_processor_names_itself_and_the_item_fails(events):
    view = fold(events)
    for item in view.items:
        if item.postprocess.status == "failed" and item.download.status == "failed":
            assert item.error is not None and item.status in ("failed", "skipped")


def test_items_skipped_because_an_earlier_job_has_them_count_as_done_not_lost():
    """A subscription's jobs always ask `skip_downloaded`: a job whose one item an earlier job has is completed, and
    its download (and audio) summary says completed with the item in `skipped`, never `failed`."""
    skip = ev.ItemSkipped(worker=WORKER, message="an earlier job has it", existing="01other/f.mp4")
    events = _sequence(
        [
            _event("requested", ev.Requested(url="http://example.com/list", mode="both")),
            _event("resolved", ev.Resolved(kind="playlist", item_count=2, worker=WORKER)),
            _event("item.queued", ev.ItemQueued(index=1, url="u1", mode="both", audio_format="mp3"), "0001"),
            _event("item.queued", ev.ItemQueued(index=2, url="u2", mode="both", audio_format="mp3"), "0002"),
            _event("item.skipped", skip, "0001"),
            _event("item.skipped", skip, "0002"),
        ]
    )
    view = fold(events)
    assert view.status == "completed" and view.download.skipped == 2 and view.download.status == "completed"
    assert view.extract.status == "completed" and view.extract.skipped == 2
    # Skipped by a cancel, the same items are lost: the summary says so.
    cancel = _event("cancel.requested", ev.CancelRequested(), None)
    cancelled = fold(_sequence(events[:4] + [cancel]))
    assert cancelled.download.status == "failed" and cancelled.download.skipped == 2


def test_a_skipped_items_file_deleted_with_its_job_is_said_on_the_item_and_changes_nothing_else():
    """Issue 23: a skipped item pointed at another job's file; deleting that job with files left it pointing at
    nothing. `item.existing_deleted` says so on the item, after the job ended, without changing its status."""
    skip = ev.ItemSkipped(worker=WORKER, message="an earlier job has it", existing="01other/f.mp4")
    events = _sequence(
        [
            _event("requested", ev.Requested(url="http://example.com/v")),
            _event("resolved", ev.Resolved(kind="video", item_count=1, worker=WORKER)),
            _event("item.queued", ev.ItemQueued(index=1, url="u1", mode="video", audio_format="mp3"), "0001"),
            _event("item.skipped", skip, "0001"),
        ]
    )
    done = fold(events)
    gone = _event("item.existing_deleted", ev.ExistingDeleted(file="01other/f.mp4", by_job="01other"), "0001")
    other = _event("item.existing_deleted", ev.ExistingDeleted(file="01other/g.mp4", by_job="01other"), "0001")
    told = fold(_sequence(events + [other, gone]))
    assert done.status == told.status == "completed" and told.finished_at == done.finished_at
    assert not done.items[0].download.existing_deleted and told.items[0].download.existing_deleted
    assert told.items[0].download.existing == "01other/f.mp4" and told.download == done.download
