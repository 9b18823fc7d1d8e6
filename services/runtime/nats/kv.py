"""The KV buckets as tubeflow reads them: the read-model bucket, a one-off read of every key, and one core
subscription that sees every put and delete of a bucket without a server-side consumer."""

from __future__ import annotations

from typing import Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from services.runtime.nats.topology import JOBS_BUCKET


async def jobs_bucket(js: JetStreamContext) -> KeyValue:
    return await js.key_value(JOBS_BUCKET)


async def read_bucket(kv: KeyValue, keys: str = ">") -> dict[str, bytes]:
    """Every current key (matching ``keys``, a subject pattern) and value of a bucket, read once through a
    short-lived watcher."""
    out: dict[str, bytes] = {}
    watcher = await kv.watch(keys, ignore_deletes=True)
    try:
        async for entry in watcher:
            if entry is None:
                break
            if entry.value:
                out[entry.key] = entry.value
    finally:
        await watcher.stop()
    return out


async def watch_bucket(
    nc: NATS,
    bucket: str,
    *,
    on_put: Callable[[str, bytes], None],
    on_delete: Callable[[str], None],
) -> Subscription:
    """Every put and delete of ``bucket`` as it happens, through one core subscription.

    A KV put is a plain message on ``$KV.<bucket>.<key>`` (deletes and purges carry a ``KV-Operation`` header), so
    listening to those subjects costs the server nothing per listener, unlike ``kv.watch`` (a consumer each).
    Nothing is replayed: read the bucket after subscribing to start from its current state.
    """
    prefix = len(f"$KV.{bucket}.")

    async def on_message(msg: Msg) -> None:
        key = msg.subject[prefix:]
        if (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
            on_delete(key)
        else:
            on_put(key, msg.data)

    return await nc.subscribe(f"$KV.{bucket}.>", cb=on_message)
