"""The download schedule's model and window arithmetic (issue 29): what a PUT may say, and when a window opens and
closes, across midnight and DST changes."""

from __future__ import annotations

import os
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from contracts.schedule import DAYS, Schedule, next_midnight, parse_size, plain, wall_open, window_state

UTC = timezone.utc
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago", "Asia/Kolkata"]


def _errors(body: dict) -> list[tuple[tuple, str]]:
    with pytest.raises(ValidationError) as caught:
        Schedule.model_validate(body)
    return [(e["loc"], e["msg"]) for e in caught.value.errors()]


def test_sizes_parse_in_powers_of_1024_and_refuse_what_is_not_one():
    assert parse_size("400K") == 400 * 1024
    assert parse_size("1.5M") == 1536 * 1024
    assert parse_size("20G") == parse_size("20GB") == parse_size("20 GiB") == 20 << 30
    assert parse_size(1000) == 1000
    for bad in ("-5M", "fast", "0", "5X", "", "1e9"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_bad_schedules_name_the_field():
    assert _errors({"timezone": "Mars/Olympus"})[0][0] == ("timezone",)
    assert _errors({"windows": [{"from": "25:00", "to": "01:00"}]})[0][0] == ("windows", 0, "from")
    assert _errors({"windows": [{"from": "1am", "to": "01:00"}]})[0][0] == ("windows", 0, "from")
    assert _errors({"windows": [{"days": ["mon", "funday"], "from": "01:00", "to": "02:00"}]})[0][0][:2] == (
        "windows",
        0,
    )
    assert _errors({"rate": "-5M"})[0][0] == ("rate",)
    assert _errors({"daily_cap": "lots"})[0][0] == ("daily_cap",)
    assert _errors({"site_caps": {"youtube.com": "-1G"}})[0][0][0] == "site_caps"
    assert _errors({"site_caps": {"not a site!": "1G"}})[0][0] == ("site_caps",)
    assert _errors({"outside": "slow"})[0][0] == ("slow_rate",)
    assert _errors({"outside": "later"})[0][0] == ("outside",)
    assert _errors({"runing_at_window_end": "finish"})[0][0] == ("runing_at_window_end",)
    # Overlaps, also across midnight and across Sunday night into Monday.
    overlapping = [
        [{"from": "01:00", "to": "05:00"}, {"days": ["mon"], "from": "04:00", "to": "06:00"}],
        [{"days": ["fri"], "from": "23:00", "to": "02:00"}, {"days": ["sat"], "from": "01:00", "to": "03:00"}],
        [{"days": ["sun"], "from": "22:00", "to": "02:00"}, {"days": ["mon"], "from": "01:30", "to": "03:00"}],
        [{"days": ["wed"], "from": "10:00", "to": "10:00"}, {"days": ["thu"], "from": "09:00", "to": "09:30"}],
    ]
    for windows in overlapping:
        assert _errors({"windows": windows}) == [(("windows",), "Value error, window 1 overlaps window 2")], windows
    # Touching is not overlapping.
    Schedule.model_validate(
        {"windows": [{"from": "01:00", "to": "05:00"}, {"from": "05:00", "to": "06:00"}], "timezone": "Europe/Berlin"}
    )


def test_a_schedule_reads_back_as_it_was_written():
    body = {
        "timezone": "Europe/Berlin",
        "windows": [{"days": ["mon", "tue"], "from": "01:00", "to": "07:00:30"}],
        "outside": "slow",
        "slow_rate": "200K",
        "rate": "5M",
        "daily_cap": "20G",
        "site_caps": {"YouTube.com": "10G"},
        "running_at_window_end": "finish",
    }
    schedule = Schedule.model_validate(body)
    assert schedule.model_dump(mode="json") == {**body, "site_caps": {"youtube.com": "10G"}}
    assert schedule.budget(True) == 5 << 20 and schedule.budget(False) == 200 << 10
    assert schedule.caps() == (20 << 30, {"youtube.com": 10 << 30})


def test_windows_across_midnight_and_on_their_days():
    schedule = Schedule.model_validate(
        {"timezone": "Europe/Berlin", "windows": [{"days": ["fri"], "from": "23:00", "to": "01:00"}]}
    )
    berlin = ZoneInfo("Europe/Berlin")
    friday = datetime(2026, 12, 4, 22, 0, tzinfo=berlin)  # a Friday
    state = schedule.window(friday)
    assert not state.open and state.until == datetime(2026, 12, 4, 23, 0, tzinfo=berlin)
    state = schedule.window(datetime(2026, 12, 5, 0, 30, tzinfo=berlin))  # Saturday 00:30: still Friday's window
    assert state.open and state.until == datetime(2026, 12, 5, 1, 0, tzinfo=berlin)
    state = schedule.window(datetime(2026, 12, 5, 1, 0, tzinfo=berlin))
    assert not state.open and state.until == datetime(2026, 12, 11, 23, 0, tzinfo=berlin)
    assert Schedule().window(friday).open and Schedule().window(friday).until is None


def test_dst_changes_follow_the_wall_clock():
    berlin = ZoneInfo("Europe/Berlin")
    # 29 March 2026: 02:00 CET jumps to 03:00 CEST. A window from 02:30 opens when the clock jumps past it.
    spring = Schedule.model_validate({"timezone": "Europe/Berlin", "windows": [{"from": "02:30", "to": "04:00"}]})
    state = spring.window(datetime(2026, 3, 29, 0, 0, tzinfo=UTC))
    assert state.until == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # the jump: 02:00 CET = 01:00 UTC
    assert spring.window(state.until).until == datetime(2026, 3, 29, 4, 0, tzinfo=berlin)
    # 25 October 2026: 03:00 CEST goes back to 02:00 CET. A window 01:00-02:30 closes at 02:30 CEST, opens again when
    # the clock goes back to 02:00 and closes at 02:30 CET.
    autumn = Schedule.model_validate({"timezone": "Europe/Berlin", "windows": [{"from": "01:00", "to": "02:30"}]})
    at = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST: closed
    state = autumn.window(at)
    assert not state.open and state.until == datetime(2026, 10, 25, 1, 0, tzinfo=UTC)  # back to 02:00 CET
    assert autumn.window(state.until).until == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET
    # Midnight is when the local date changes: 25 October has 25 hours in Berlin.
    assert next_midnight("Europe/Berlin", datetime(2026, 10, 24, 23, 0, tzinfo=UTC)) == datetime(
        2026, 10, 25, 23, 0, tzinfo=UTC
    )
    assert next_midnight("America/Santiago", datetime(2026, 9, 5, 12, 0, tzinfo=UTC)).astimezone(
        ZoneInfo("America/Santiago")
    ).time() in (time(0, 0), time(1, 0))  # Chile's clocks skip midnight on the day DST begins


_times = st.builds(time, st.integers(0, 23), st.integers(0, 59), st.sampled_from([0, 0, 0, 30]))
_windows = st.lists(
    st.tuples(st.frozensets(st.sampled_from(DAYS), min_size=1).map(lambda d: tuple(sorted(d))), _times, _times),
    min_size=1,
    max_size=3,
)
_instants = st.datetimes(datetime(2025, 1, 1), datetime(2028, 12, 31)).map(lambda d: d.replace(tzinfo=UTC))


@settings(max_examples=300, deadline=None)
@given(windows=_windows, zone=st.sampled_from(ZONES), now=_instants, probes=st.lists(st.floats(0, 1), max_size=6))
def test_the_next_change_is_the_first_moment_the_wall_clock_rule_flips(windows, zone, now, probes):
    """Whatever the windows (overlapping or not, across midnight, whole days) and the zone's DST rules: the state
    ``window`` computes is the wall-clock rule's at ``now``, holds until the change it names, and flips there."""
    tz = ZoneInfo(zone)

    def rule(at: datetime) -> bool:
        return wall_open(windows, at.astimezone(tz).replace(tzinfo=None))

    state = window_state(tuple(windows), zone, now)
    assert state.open == rule(now)
    if state.until is None:
        end = now + timedelta(days=8)
    else:
        assert state.until > now
        assert rule(state.until) != state.open
        end = state.until - timedelta(microseconds=1)
        assert rule(end) == state.open
    for fraction in probes:
        assert rule(now + (end - now) * fraction) == state.open


def test_plain_windows_are_what_the_rule_reads():
    schedule = Schedule.model_validate({"windows": [{"days": ["sat"], "from": "10:00", "to": "10:00"}]})
    rows = plain(schedule.windows)
    assert wall_open(rows, datetime(2026, 12, 5, 10, 0)) and wall_open(rows, datetime(2026, 12, 6, 9, 59, 59))
    assert not wall_open(rows, datetime(2026, 12, 6, 10, 0)) and not wall_open(rows, datetime(2026, 12, 5, 9, 59))


def test_a_schedule_file_that_does_not_parse_stops_start_up_with_one_line(tmp_path):
    from tests.support.processes import run_cli

    bad = tmp_path / "schedule.json"
    bad.write_text('{"timezone": "Europe/Berlin", "windows": [{"from": "25:00", "to": "07:00"}]}')
    env = {"TUBEFLOW_SCHEDULE_FILE": str(bad), "TUBEFLOW_NATS_URL": "nats://127.0.0.1:9"}
    refused = run_cli("service", "api", env={**os.environ, **env}, timeout=60)
    assert refused.returncode == 2, refused.stderr
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert lines == [
        f"error: TUBEFLOW_SCHEDULE_FILE {bad}: windows.0.from: must be a time of day, HH:MM or HH:MM:SS "
        "(00:00 to 23:59:59)"
    ], refused.stderr
    bad.write_text("not json")
    refused = run_cli("service", "api", env={**os.environ, **env}, timeout=60)
    assert refused.returncode == 2 and "TUBEFLOW_SCHEDULE_FILE" in refused.stderr, refused.stderr
