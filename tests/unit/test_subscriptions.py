"""The subscription rules: intervals, title patterns (no regex), `since`, the fold (when the next check is due, what
was seen, backing off a failing source) and which entries a check takes."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from contracts.payloads import ErrorInfo
from contracts.subscriptions import (
    NewEntry,
    SubscriptionCheckedData,
    SubscriptionCreatedData,
    SubscriptionPausedData,
    TitleFilter,
    apply_subscription,
    due,
    make_subscription_event,
    parse_interval,
    since_passes,
)
from services.engine.media import Entry
from services.scheduler.checks import pick, plain_url

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def created(interval: float = 3600, start: bool = True, **settings):  # noqa: ANN003, ANN201
    data = SubscriptionCreatedData(url="http://127.0.0.1/feed.xml", interval=interval, start=start, **settings)
    return make_subscription_event("created", "sb1", T0, "c", data)


def checked(seconds: float, *ids: str, error: str | None = None):  # noqa: ANN201
    new = [NewEntry(entry_id=i, url=f"http://127.0.0.1/{i}", job_id="j" + i) for i in ids]
    data = SubscriptionCheckedData(new=new, error=ErrorInfo(code=error, message="x") if error else None)
    return make_subscription_event("checked", "sb1", at(seconds), f"k{seconds}", data)


def fold(*events):  # noqa: ANN002, ANN201
    view = None
    for seq, event in enumerate(events, start=1):
        view = apply_subscription(view, event.model_copy(update={"seq": seq}))
    return view


@pytest.mark.parametrize(
    ("text", "seconds"), [("5m", 300), ("1h", 3600), ("1h30m", 5400), ("2d", 172800), ("90s", 90), (600, 600)]
)
def test_intervals(text, seconds):
    assert parse_interval(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "soon", "1x", "-5", "h", 0, -3, "3000000d", "99999999999999999999999d", 1e30, float("nan"), "367d"]
)
def test_bad_intervals(text):
    with pytest.raises(ValueError):
        parse_interval(text)


def test_title_patterns_are_text_or_globs_in_any_case_never_regex():
    keep = TitleFilter(include=["linux", "*Tutorial ?"], exclude=["*short*"])
    assert keep.matches("Intro to LINUX")
    assert keep.matches("a tutorial 3")
    assert not keep.matches("Linux #shorts")
    assert not keep.matches("cooking")
    assert TitleFilter(include=["a.b"]).matches("xa.by") and not TitleFilter(include=["a.b"]).matches("axb")
    for bad in ("[abc", "[]x", "", "*" * 9 + "a", "a\nb"):
        with pytest.raises(ValidationError):
            TitleFilter(include=[bad])


def test_since_leaves_out_older_entries_and_keeps_undated_ones():
    day = date(2026, 11, 1)
    assert since_passes(day, datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp())
    assert not since_passes(day, datetime(2026, 10, 31, 23, tzinfo=timezone.utc).timestamp())
    assert since_passes(day, None) and since_passes(None, 0)


def test_a_new_subscription_is_due_at_once_then_after_its_interval():
    view = fold(created())
    assert due([view], T0) == [view]
    view = fold(created(), checked(10, "a", "b"))
    assert view.next_check_at == at(3610) and view.seen == {"a", "b"} and view.new_items == 2
    assert due([view], at(3609)) == [] and due([view], at(3610)) == [view]


def test_a_failing_source_backs_off_and_keeps_what_it_saw():
    view = fold(created(interval=600), checked(0, "a"), checked(600, error="http_error"), checked(1800, error="x"))
    assert view.failures == 2 and view.last_error.code == "x" and view.seen == {"a"}
    assert view.next_check_at == at(1800 + 1200)  # 600 s, doubled once
    view = apply_subscription(view, checked(3000, "b").model_copy(update={"seq": 9}))
    assert view.failures == 0 and view.last_error is None and view.next_check_at == at(3600)


@pytest.mark.parametrize("interval", [3000000 * 86400.0, 1e30, float("inf"), float("nan"), 0.0, -5.0])
def test_any_stored_interval_or_failure_count_gives_a_next_check(interval):
    """Issue 23: an interval of 3,000,000 days (accepted by PATCH then) raised OverflowError in every reader, and
    ~1,025 failures in a row would have made the backoff overflow."""
    view = fold(created(interval=interval), checked(0))
    assert view.next_check_at is not None and view.next_check_at >= at(1)
    many = view.model_copy(update={"failures": 5000})
    assert many.next_check_at is not None and due([many], at(3600)) == []
    late = fold(created(interval=interval), checked(0)).model_copy(update={"last_check_at": datetime.max})
    assert late.next_check_at.tzinfo is not None  # a naive instant (JSON may carry one) is read as UTC


def test_check_now_pause_and_resume():
    asked = make_subscription_event("check_requested", "sb1", at(100), "r")
    view = fold(created(), checked(0), asked)
    assert view.next_check_at == at(100)
    paused = make_subscription_event("paused", "sb1", at(200), "p", SubscriptionPausedData(reason="not_a_playlist"))
    view = fold(created(), checked(0), paused)
    assert view.paused and view.paused_reason == "not_a_playlist" and view.next_check_at is None
    view = fold(created(), checked(0), paused, make_subscription_event("resumed", "sb1", at(300), "s"))
    assert not view.paused and view.next_check_at == at(300)
    assert fold(created(start=False)).next_check_at is None


def test_the_public_view_counts_seen_ids_instead_of_listing_them():
    public = fold(created(), checked(0, "a", "b")).public().model_dump(mode="json")
    assert public["seen"] == 2 and public["url"] == "http://127.0.0.1/feed.xml" and "settings" not in public
    assert public["next_check_at"] == "2026-12-01T13:00:00Z" and public["checks"] == 1


@given(st.lists(st.lists(st.sampled_from("abcdefgh"), max_size=4), max_size=6))
def test_seen_only_grows_and_counts_every_job(checks):
    events = [created()] + [checked(n * 10, *dict.fromkeys(ids)) for n, ids in enumerate(checks)]
    view = fold(*events)
    assert view.seen == {i for ids in checks for i in ids}
    assert view.new_items == sum(len(dict.fromkeys(ids)) for ids in checks)


def test_a_check_takes_unseen_entries_that_pass_the_filters_up_to_its_cap():
    view = fold(
        created(max_items_per_check=2, title_filter=TitleFilter(exclude=["*trailer*"]), since=date(2026, 1, 1)),
        checked(0, "seen"),
    )
    old = datetime(2025, 6, 1, tzinfo=timezone.utc).timestamp()
    entries = [
        Entry(1, "http://127.0.0.1/1", "Seen one", id="seen"),
        Entry(2, "http://127.0.0.1/2", "A trailer", id="t"),
        Entry(3, "http://127.0.0.1/3", "Old one", id="old", timestamp=old),
        Entry(4, "http://127.0.0.1/4", "New one", id="n1"),
        Entry(5, "http://127.0.0.1/5", None, id="n2"),
        Entry(6, "http://127.0.0.1/6#__youtubedl_smuggle=x", "Third", id=None),
    ]
    take, filtered, remaining = pick(view, entries)
    assert [e.id for e in take] == ["n1", "n2"] and filtered == 2 and remaining == 1
    assert plain_url(entries[5].url) == "http://127.0.0.1/6"


def test_one_check_takes_no_more_than_one_event_holds():
    view = fold(created(max_items_per_check=500))
    long = "http://127.0.0.1/" + "x" * 4000
    entries = [Entry(n, f"{long}/{n}", "t" * 300, id=f"{n:0600d}") for n in range(1, 501)]
    take, filtered, remaining = pick(view, entries)
    assert 0 < len(take) < 100 and remaining == 500 - len(take) and filtered == 0
    assert sum(len(e.url) + len(e.id) + len(e.title) for e in take) <= 256 * 1024


def test_a_feed_entry_is_its_guid_wherever_its_enclosure_moves():
    """Issue 23: the same <guid> with a changed enclosure URL (`?via=cdn2`) became a second job and download."""
    from yt_dlp.utils import smuggle_url

    from services.scheduler.checks import entry_identity

    first = Entry(1, smuggle_url("http://127.0.0.1/ep1.mp3", {"force_videoid": "guid-1"}), "Episode 1")
    moved = Entry(1, smuggle_url("http://127.0.0.1/ep1.mp3?via=cdn2", {"force_videoid": "guid-1"}), "Episode 1")
    assert entry_identity(first) == entry_identity(moved) == "guid-1"
    view = fold(created(), checked(0, entry_identity(first)))
    assert pick(view, [moved]) == ([], 0, 0)
    # A subscription that remembered the smuggled URL (before guids were its identity) takes nothing again either.
    legacy = fold(created(), checked(0, first.url))
    assert pick(legacy, [first]) == ([], 0, 0)
    assert entry_identity(Entry(2, "http://127.0.0.1/x#__youtubedl_smuggle=x", "t")).startswith("http://")
