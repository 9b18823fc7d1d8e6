"""A downloader's side of the schedule without NATS: the slot process's meter (bytes counted, not those resumed;
the rate held block by block), the budget's share, and which of several downloads a daily cap stops."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from contracts import events as ev
from contracts.options import DownloadOptions
from contracts.schedule import DayUsage, Schedule
from services.downloader.schedule import ScheduleGate
from services.engine.slot_process import Meter
from services.runtime.cancellation import CancelToken


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def test_the_meter_counts_new_bytes_only_and_holds_the_rate():
    clock = FakeClock()
    meter = Meter(clock, clock.sleep)
    # A fresh download: every block counts; at 100 KiB/s, 1 MiB in 16 KiB blocks takes 10.24 s.
    for n in range(1, 65):
        meter.pace(meter.block(n * 16384), 102400.0, lambda: False)
    assert meter.received == 64 * 16384
    assert 10.1 <= clock.t - 100.0 <= 10.25
    # A count that steps over a resumed file (more than a block at once): only what comes after counts; a count that
    # starts over low is another file, fresh.
    before = meter.received
    meter.block(9_000_000)
    meter.block(9_016_384)
    assert meter.received - before == 16384
    meter.block(100)
    meter.block(1_100)
    assert meter.received - before == 16384 + 1_100
    # No rate: no wait; a stop asked ends a wait at once.
    start = clock.t
    meter.pace(10_000_000, None, lambda: False)
    meter.pace(10_000_000, 1.0, lambda: True)
    assert clock.t == start


def _queued(n: int, url: str = "http://127.0.0.1/v.mp4", **options) -> ev.ItemQueuedEvent:  # noqa: ANN003
    return ev.item_queued(
        f"job{n}",
        "0001",
        index=1,
        url=url,
        title=None,
        mode="video",
        audio_format="mp3",
        format=None,
        round=0,
        occurred_at=datetime.now(timezone.utc),
        options=DownloadOptions(**options) if options else None,
    )


async def _said(*_args) -> None:  # noqa: ANN002
    return None


def _gate(schedule: Schedule) -> ScheduleGate:
    gate = ScheduleGate(queue_kv=None, worker_key="me", announce=_said)  # type: ignore[arg-type]
    gate.set_schedule(schedule)
    gate._usage_day = gate._day()
    return gate


def test_of_three_downloads_that_would_pass_a_cap_the_last_one_stops_and_waits_for_its_size():
    async def run() -> None:
        gate = _gate(Schedule(site_caps={"127.0.0.1": "3M"}))
        size = 1_400_000
        transfers = []
        for n in range(3):
            transfer = gate.begin(_queued(n), CancelToken(f"job{n}", "download"))
            transfer.since = 1000.0 + n
            transfer.saw(
                {"status": "downloading", "downloaded_bytes": 1000, "total_bytes": size, "received_bytes": 1000}
            )
            transfers.append(transfer)
        for transfer in transfers:
            gate._count(transfer)  # (as a tick does before it shares them: no NATS here)
        gate.enforce()
        assert [t.token.reason for t in transfers] == [None, None, "schedule"]
        code, message, until = gate.stopped("job2/0001")
        assert code == "daily_cap" and "daily cap of 127.0.0.1 reached" in message
        assert until == gate._real(Schedule().next_midnight(gate.now()))
        gate.end(transfers[2])
        # Before it starts again: it waits while the two run (their sizes) and once they are done (today's bytes).
        assert gate.hold(_queued(2))[0] == "daily_cap"
        for transfer in transfers[:2]:
            transfer.saw({"status": "finished", "downloaded_bytes": size, "total_bytes": size, "received_bytes": size})
            gate.end(transfer)
        assert gate.hold(_queued(2))[0] == "daily_cap"
        # Another site, and a job that ignores the schedule, go.
        assert gate.hold(_queued(3, url="http://example.org/v.mp4")) is None
        assert gate.hold(_queued(4, schedule="ignore")) is None
        # A new day: the cap starts over.
        gate._usage, gate._usage_day, gate._pending = DayUsage(), gate._day() + timedelta(days=1), {}
        gate.offset = timedelta(days=1)
        assert gate.hold(_queued(2)) is None

    asyncio.run(run())


def test_the_budget_is_shared_by_the_downloads_here_and_in_the_other_processes():
    async def run() -> None:
        gate = _gate(Schedule(rate="400K"))
        mine = [gate.begin(_queued(n), CancelToken(f"job{n}", "download")) for n in range(2)]
        assert gate.rate(mine[0]) == 400 * 1024 / 2
        gate.others_saw("other", b'{"running": [{"scheduled": true, "site": "x", "size": 0, "counted": 0}, {}]}')
        assert gate.rate(mine[0]) == 400 * 1024 / 3
        ignoring = gate.begin(_queued(9, schedule="ignore"), CancelToken("job9", "download"))
        assert gate.rate(ignoring) is None and gate.rate(mine[1]) == 400 * 1024 / 3
        gate.others_saw("other", None)
        gate.end(mine[1])
        assert gate.rate(mine[0]) == 400 * 1024
        gate.set_schedule(None)
        assert gate.rate(mine[0]) is None

    asyncio.run(run())
