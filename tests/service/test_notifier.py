"""The notifier's deliveries against one real NATS server and two loopback receivers: pending deliveries come from
an index kept from the bucket's writes (the bucket is never scanned), and a receiver that takes its time holds one
attempt, never the others."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from services.notifier.main import Notifier
from services.runtime.addresses import AddressPolicy, parse_networks
from services.runtime.clock import utcnow
from services.runtime.deliveries import Delivery
from services.runtime.nats import read_bucket, watch_bucket
from services.runtime.nats.topology import DELIVERIES_BUCKET, WEBHOOKS_BUCKET
from services.runtime.webhooks import Webhook, WebhookStore, new_id
from tests.support.receivers import Loopback


class Receiver:
    def __init__(self, delay: float) -> None:
        self.received: list[float] = []

        def handle(method: str, path: str, headers: dict, body: bytes) -> tuple[int, str, bytes]:
            time.sleep(delay)
            self.received.append(time.monotonic())
            return 204, "text/plain", b""

        self.server = Loopback(handle)
        self.url = f"{self.server.base}/hook"


async def test_a_slow_receiver_holds_one_attempt_and_never_the_others(fresh_nc):
    nats = fresh_nc
    js = nats.jetstream()
    hooks, records = WebhookStore(await js.key_value(WEBHOOKS_BUCKET)), await js.key_value(DELIVERIES_BUCKET)
    slow, fast = Receiver(delay=4.0), Receiver(delay=0.0)
    made = []
    for receiver in (slow, slow, fast):
        hook = Webhook(
            id=new_id(), url=receiver.url, events=["job.completed"], secret="s" * 16,
            created_at=utcnow() - timedelta(minutes=1),
        )  # fmt: skip
        await hooks.put(hook)
        made.append(hook)
    notifier = Notifier(hooks, records, AddressPolicy(False, parse_networks("127.0.0.0/8")))
    sub = await watch_bucket(
        nats, DELIVERIES_BUCKET, on_put=notifier.on_delivery, on_delete=notifier.on_delivery_deleted
    )
    for n, hook in enumerate(made):
        await notifier._record(hook.id, f"job{n}", f"d{n}", "job.completed", {"event": "job.completed"})
    stop = asyncio.Event()
    started = time.monotonic()
    running = asyncio.create_task(notifier.run(stop))
    try:
        while not fast.received:
            assert time.monotonic() - started < 3.0, "the fast receiver waited for the slow ones"
            await asyncio.sleep(0.05)
        assert not slow.received  # both slow attempts still under way, beside the fast one
        while len(slow.received) < 2:
            assert time.monotonic() - started < 10.0
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(running, 15)
        await sub.unsubscribe()
        slow.server.close()
        fast.server.close()
    stored = {Delivery.decode(v).id: Delivery.decode(v) for v in (await read_bucket(records)).values()}
    assert {d.status for d in stored.values()} == {"delivered"} and len(stored) == 3
    assert all(d.attempts == 1 for d in stored.values())
