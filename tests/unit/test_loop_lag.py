"""The loop-lag monitor sees a blocked event loop, and its windowed maximum forgets old spikes."""

import asyncio
import time

from services.runtime.metrics import LOOP_LAG_MAX, LoopLagMonitor


async def test_a_blocked_loop_is_seen() -> None:
    monitor = LoopLagMonitor(interval=0.005).start()
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.08)  # block the loop: the monitor's timer fires that much late
        await asyncio.sleep(0.05)
    finally:
        monitor.stop()
    assert monitor.max_lag >= 0.05
    assert LOOP_LAG_MAX._value.get() >= 0.05


def test_window_maximum_forgets_old_spikes() -> None:
    monitor = LoopLagMonitor(window=10.0)
    monitor.record(0.5, now=100.0)
    monitor.record(0.1, now=105.0)
    assert LOOP_LAG_MAX._value.get() == 0.5
    monitor.record(0.05, now=111.0)  # the 0.5 spike is 11 s old now
    assert LOOP_LAG_MAX._value.get() == 0.1
    monitor.record(0.2, now=112.0)
    assert LOOP_LAG_MAX._value.get() == 0.2
    assert monitor.max_lag == 0.5
