"""Automatic cool-downs (issue 27) against a real NATS: what starts one, how long it lasts on repeat, what every
process sees, what ends it early and what resets it; each recorded on TUBEFLOW_SYSTEM."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from contracts.system import parse_system_event
from services.runtime.cooldown import RESET_AFTER, Cooldowns, read_cooldowns
from services.runtime.nats.topology import PACING_BUCKET, SYSTEM_STREAM

URL = "https://www.example.com/watch?v=1"


async def _recorded(js) -> list:  # noqa: ANN001
    info = await js.stream_info(SYSTEM_STREAM)
    events = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        events.append(parse_system_event((await js.get_msg(SYSTEM_STREAM, seq)).data))
    return events


async def _seen(cooldowns: Cooldowns, site: str, present: bool = True) -> None:
    for _ in range(100):
        if (cooldowns.cooling(site) is not None) == present:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{site} cooling={not present} still")


async def test_a_429_cools_the_site_down_for_every_process_doubling_on_repeat(fresh_nc, js):
    kv = await js.key_value(PACING_BUCKET)
    one = await Cooldowns(js, kv, 2.0, "one").start(fresh_nc)
    other = await Cooldowns(js, kv, 2.0, "other").start(fresh_nc)
    assert await one.strike(URL, "http_404", "gone") is None  # not a push-back
    first = await one.strike(URL, "site_rate_limited", "HTTP Error 429: Too Many Requests")
    assert first is not None and first.site == "example.com" and first.level == 1
    assert 1.9 <= (first.until - first.since).total_seconds() <= 2.0
    await _seen(other, "example.com")
    # Its subdomains and every URL of it; other sites not.
    assert other.cooling("https://music.example.com/x") == other.cooling("example.com") == first
    assert other.cooling("https://example.org/x") is None
    # Refused again while it cools down (another process's request in flight): the same cool-down, not a longer one.
    assert await other.strike(URL, "site_rate_limited", "again") == first

    # Over: the next push-back lasts twice as long.
    later = datetime.now(timezone.utc) + timedelta(seconds=3)
    assert one.cooling("example.com", now=later) is None
    await asyncio.sleep((first.until - datetime.now(timezone.utc)).total_seconds() + 0.05)
    second = await other.strike(URL, "bot_check", "Sign in to confirm you're not a bot")
    assert second is not None and second.level == 2 and second.code == "bot_check"
    assert 3.9 <= (second.until - second.since).total_seconds() <= 4.0

    # Ended on request: in force nowhere at once, its level kept; a second request finds nothing to end.
    assert (await one.resume("example.com")) is not None
    await _seen(other, "example.com", present=False)
    assert await one.resume("example.com") is None
    (kept,) = await read_cooldowns(kv)
    assert kept.level == 2

    # Downloads that went well after it ended: the next cool-down starts short again.
    for _ in range(RESET_AFTER):
        await other.succeeded(URL)
    assert await read_cooldowns(kv) == []
    third = await one.strike(URL, "site_rate_limited", "429")
    assert third is not None and third.level == 1

    types = [(e.type, getattr(e.data, "by", None)) for e in await _recorded(js)]
    assert types == [
        ("site.cooling", None),
        ("site.cooling", None),
        ("site.resumed", "request"),
        ("site.resumed", "successes"),
        ("site.cooling", None),
    ], types
    await one.stop()
    await other.stop()


async def test_a_burst_of_403s_over_processes_cools_down_and_single_ones_do_not(fresh_nc, js):
    kv = await js.key_value(PACING_BUCKET)
    one = await Cooldowns(js, kv, 60.0, "one").start(fresh_nc)
    other = await Cooldowns(js, kv, 60.0, "other").start(fresh_nc)
    assert await one.strike(URL, "http_403", "Forbidden") is None
    assert await other.strike(URL, "http_403", "Forbidden") is None
    burst = await one.strike(URL, "http_403", "Forbidden")
    assert burst is not None and burst.code == "http_403" and burst.level == 1
    # A host of any letters (an IDN's, a stranger's URL) is a key NATS takes.
    idn = await one.strike("https://þorn.example/v", "site_rate_limited", "429")
    assert idn is not None and idn.site == "þorn.example" and one.cooling("https://þorn.example/w") == idn
    # Off (TUBEFLOW_SITE_COOLDOWN=off): nothing starts one.
    off = Cooldowns(js, kv, 0.0, "off")
    assert await off.strike("https://example.org/", "site_rate_limited", "429") is None
    await one.stop()
    await other.stop()
