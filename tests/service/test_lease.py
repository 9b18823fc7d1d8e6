"""The scheduler's lease on a real NATS: a standby takes over a dead holder's lease within the period after its last
renewal plus the clock margin (issue 23: it took lease + 1 s + a third of the lease, the standby's next try)."""

from __future__ import annotations

import asyncio
import time

from services.runtime.nats.lease import SKEW, Lease
from services.runtime.nats.topology import SCHEDULER_BUCKET

PERIOD = 3.0


async def test_a_standby_takes_over_a_dead_holders_lease_as_soon_as_it_runs_out(fresh_nc):
    kv = await fresh_nc.jetstream().key_value(SCHEDULER_BUCKET)
    holder, standby = Lease(kv, "leader", "a", PERIOD), Lease(kv, "leader", "b", PERIOD)
    assert await holder.try_hold()
    stop = asyncio.Event()
    keeping = asyncio.create_task(standby.keep(stop))
    try:
        # The holder renews for a while, at random moments of the standby's rhythm, then dies without a word.
        for _ in range(3):
            await asyncio.sleep(PERIOD / 3 + 0.17)
            assert await holder.try_hold()
        died = time.monotonic()  # its last renewal: the lease runs out PERIOD after it
        assert not standby.held
        await asyncio.wait_for(standby.gained.wait(), PERIOD + SKEW + 2)
        took = time.monotonic() - died
        assert took <= PERIOD + SKEW + 0.4, f"taken over {took:.2f} s after the last renewal"
        assert took >= PERIOD, f"taken over {took:.2f} s after the last renewal: before it ran out"
    finally:
        stop.set()
        await asyncio.wait_for(keeping, 5)
