"""The progress pump sends at most every interval unless the percentage jumps, keeps order, and always sends the last."""

from __future__ import annotations

import asyncio

from services.runtime.throttle import ProgressPump


async def test_a_burst_is_coalesced_and_the_last_report_is_always_sent():
    sent = []

    async def send(report):
        sent.append(report)

    pump = ProgressPump(send, lambda r: r / 10, interval=10.0, min_step=50.0).start()
    for report in range(1, 101):  # percent 0.1 .. 10: never a 50 % step
        pump.offer(report)
    await asyncio.sleep(0.05)
    await pump.close()
    assert sent == [100]


async def test_a_large_step_is_sent_at_once_and_order_is_kept():
    sent = []

    async def send(report):
        sent.append(report)

    pump = ProgressPump(send, float, interval=10.0, min_step=1.0).start()
    for report in (1, 5, 9):
        pump.offer(report)
        await asyncio.sleep(0.01)
    pump.offer(9.5)  # moved < 1: waits for the interval, then close flushes it
    await asyncio.sleep(0.01)
    assert sent == [1, 5, 9]
    await pump.close()
    assert sent == [1, 5, 9, 9.5]


async def test_reports_from_a_worker_thread_arrive_in_order():
    sent = []

    async def send(report):
        sent.append(report)

    pump = ProgressPump(send, float, interval=0.0, min_step=0.0).start()
    loop = asyncio.get_running_loop()

    def worker():
        for report in range(1, 51):
            loop.call_soon_threadsafe(pump.offer, float(report))

    await asyncio.to_thread(worker)
    await asyncio.sleep(0.05)
    await pump.close()
    assert sent == sorted(sent) and sent[-1] == 50.0


async def test_a_failing_send_does_not_stop_the_pump():
    sent = []

    async def send(report):
        if report == 1:
            raise ConnectionError("NATS is down")
        sent.append(report)

    pump = ProgressPump(send, float, interval=0.0, min_step=0.0).start()
    pump.offer(1.0)
    await asyncio.sleep(0.01)
    pump.offer(2.0)
    await pump.close()
    assert sent == [2.0]
