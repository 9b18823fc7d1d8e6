"""Listings of KV buckets are complete: read thousands of times while writes go on, a listing never misses a record
that existed before it started (issue 23, item 8: `GET /api/webhooks` and a webhook's deliveries answered `[]` about
1 time in 60, from nats-py's key listing deciding "nothing there" from a count that races with delivery)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from services.runtime.clock import utcnow
from services.runtime.nats import read_bucket
from services.runtime.nats.topology import DELIVERIES_BUCKET, WEBHOOKS_BUCKET
from services.runtime.webhooks import Webhook, WebhookStore, new_id

READS = 1500


async def test_listings_are_complete_while_writes_go_on(fresh_nc):
    js = fresh_nc.jetstream()
    store, deliveries = WebhookStore(await js.key_value(WEBHOOKS_BUCKET)), await js.key_value(DELIVERIES_BUCKET)
    hooks = []
    for n in range(3):
        hook = Webhook(id=new_id(), url=f"http://127.0.0.1:9/{n}", events=["job.completed"], secret="s" * 16,
                       created_at=utcnow() - timedelta(minutes=1))  # fmt: skip
        await store.put(hook)
        hooks.append(hook.id)
    for n in range(5):
        await deliveries.put(f"{hooks[0]}.d{n}", b'{"status": "pending"}')
    writing = True

    async def write() -> None:
        n = 0
        while writing:
            await deliveries.put(f"{hooks[1]}.w{n}", b'{"status": "delivered"}')
            await deliveries.delete(f"{hooks[1]}.w{n}") if n % 3 == 0 else None
            n += 1
            await asyncio.sleep(0)

    writer = asyncio.create_task(write())
    short = []
    try:
        for n in range(READS):
            listed = await store.all() if n % 2 else None
            if listed is not None and [w.id for w in listed] != sorted(hooks):
                short.append(("webhooks", n, len(listed)))
            mine = await read_bucket(deliveries, f"{hooks[0]}.>")
            if sorted(mine) != [f"{hooks[0]}.d{i}" for i in range(5)]:
                short.append(("deliveries", n, len(mine)))
    finally:
        writing = False
        await writer
    assert not short, f"{len(short)} of {READS} listings incomplete: {short[:5]}"
    assert await read_bucket(await js.key_value("tubeflow_queue"), "nothing.>") == {}
