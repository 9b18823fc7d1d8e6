"""Per-site limit settings and the fold of the queue's commands (hold, start, priority, delete)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from contracts import events as ev
from contracts.decisions import Refusal, plan_delete, plan_priority, plan_start
from contracts.fold import apply, fold
from services.runtime.sitelimits import limit_for, parse_limits, site_of

T = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_site_limits_parse_and_the_most_specific_key_wins():
    limits = parse_limits("youtube.com=2, www.vimeo.com=1,*=6", "X")
    assert limits == {"youtube.com": 2, "vimeo.com": 1, "*": 6}
    assert site_of("https://www.youtube.com/watch?v=1") == "youtube.com"
    assert limit_for("m.youtube.com", limits) == ("youtube.com", 2)
    assert limit_for("notyoutube.com", limits) == ("notyoutube.com", 6)  # its own site under *
    assert limit_for("example.org", {"youtube.com": 2}) is None
    assert limit_for("youtube.com", {"youtube.com": 0}) is None
    for bad in ("youtube.com", "youtube.com=x", "=3", "you tube.com=2"):
        with pytest.raises(ValueError, match="X"):
            parse_limits(bad, "X")


def _event(seq: int, event_type: str, data: ev.Payload, item: str | None = None) -> ev.Envelope:
    return ev.make_event(event_type, job_id="j", data=data, occurred_at=T, event_id=f"e{seq}", item_id=item).model_copy(
        update={"seq": seq}
    )


def test_a_held_job_resolves_waits_and_starts_and_its_priority_is_folded():
    events = [
        _event(1, "requested", ev.Requested(url="http://x/v", start=False, priority="low")),
        _event(2, "resolve.started", ev.ResolveStarted(worker="w")),
        _event(3, "resolved", ev.Resolved(kind="video", item_count=1, worker="w")),
        _event(
            4,
            "item.queued",
            ev.ItemQueued(index=1, url="http://x/v", mode="video", audio_format="mp3", held=True),
            "0001",
        ),
    ]
    view = fold(events)
    assert (view.status, view.held, view.priority, view.progress.stage) == ("held", True, "low", "queued")
    assert isinstance(plan_start(view, T), list)
    view = apply(view, _event(5, "priority.changed", ev.PriorityChanged(priority="high")))
    view = apply(view, _event(6, "start.requested", ev.StartRequested()))
    assert (view.status, view.held, view.priority) == ("running", False, "high")
    refused = plan_start(view, T)
    assert isinstance(refused, Refusal) and refused.code == "not_held"


def test_delete_cancels_a_running_job_first_and_a_deleted_job_stays_deleted():
    view = fold(
        [
            _event(1, "requested", ev.Requested(url="http://x/v")),
            _event(2, "resolve.started", ev.ResolveStarted(worker="w")),
        ]
    )
    planned = plan_delete(view, True, T)
    assert [e.type for e in planned] == ["cancel.requested", "job.deleted"]
    for seq, event in enumerate(planned, start=3):
        view = apply(view, event.model_copy(update={"seq": seq}))
    assert view.deleted_at == T and view.deleted_files is True and view.items == []
    later = apply(view, _event(9, "retry.requested", ev.RetryRequested(round=1)))
    assert later.deleted_at == T and later.status == view.status and later.seq == 9
    finished = plan_priority(view, "high", T, "p1")
    assert isinstance(finished, Refusal) and finished.code == "already_finished"


def test_site_pacing_reads_durations_and_ranges_and_refuses_what_it_cannot_read():
    import pytest

    from services.runtime.settings import Settings
    from services.runtime.sitelimits import Pacing, pacing_for, parse_pacing

    paced = parse_pacing("youtube.com=requests:1s,downloads:5-30s;*=downloads:500ms")
    assert paced == {"youtube.com": Pacing(1.0, (5.0, 30.0)), "*": Pacing(None, (0.5, 0.5))}
    assert parse_pacing("a.com=downloads:2-3s,b.com=requests:2m") == {
        "a.com": Pacing(None, (2.0, 3.0)),
        "b.com": Pacing(120.0, None),
    }
    assert pacing_for("music.youtube.com", paced) == ("youtube.com", paced["youtube.com"])
    assert pacing_for("vimeo.com", paced) == ("vimeo.com", paced["*"])  # under * each site alone
    for bad in ("youtube.com", "a.com=sleep:1s", "a.com=downloads:3-2s", "a.com=downloads:soon", "a.com=downloads:2d"):
        with pytest.raises(ValueError, match="TUBEFLOW_SITE_PACING"):
            parse_pacing(bad)
    with pytest.raises(ValueError, match="TUBEFLOW_SITE_PACING"):
        Settings(site_pacing="youtube.com=downloads:x")


def test_the_cool_down_setting_is_a_duration_or_off():
    import pytest

    from services.runtime.settings import Settings

    assert Settings().cooldown_seconds() == 600.0  # on by default: 10 minutes
    assert Settings(site_cooldown="90s").cooldown_seconds() == 90.0
    assert Settings(site_cooldown="off").cooldown_seconds() == 0.0
    for bad in ("soon", "5-10m", "2d", "-1s"):
        with pytest.raises(ValueError, match="TUBEFLOW_SITE_COOLDOWN"):
            Settings(site_cooldown=bad)
