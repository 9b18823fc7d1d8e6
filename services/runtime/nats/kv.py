"""The KV buckets as tubeflow reads them: the read-model bucket, a one-off read of every key, and one core
subscription that sees every put and delete of a bucket without a server-side consumer."""

from __future__ import annotations

import contextlib
from typing import Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from services.runtime.nats.topology import JOBS_BUCKET


async def jobs_bucket(js: JetStreamContext) -> KeyValue:
    return await js.key_value(JOBS_BUCKET)


# A key's last message that says it is gone: a delete or purge, or (nats-server 2.11+) an expiry marker.
_GONE = ("DEL", "PURGE")


async def read_bucket(kv: KeyValue, keys: str = ">", timeout: float = 10.0) -> dict[str, bytes]:
    """Every current key (matching ``keys``, a subject pattern) and value of a bucket, read once, complete.

    Through a pull consumer of each key's last message: it delivers nothing before it is asked, so its pending count
    at creation is exactly what there is to read, and the read ends when that many came. (nats-py's ``kv.keys()``
    and ``kv.watch`` decide "nothing there" from a push consumer's pending count, which races with the messages
    already on their way: about 1 listing in 60 came back empty while records existed, issue 23.)"""
    bucket = kv._name  # noqa: SLF001 - nats-py keeps the bucket's name there
    prefix = f"$KV.{bucket}."
    config = api.ConsumerConfig(
        deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
        ack_policy=api.AckPolicy.NONE,
        inactive_threshold=30.0,
        mem_storage=True,
        num_replicas=1,
    )
    js, stream = kv._js, f"KV_{bucket}"  # noqa: SLF001
    sub = await js.pull_subscribe(prefix + keys, stream=stream, config=config)
    out: dict[str, bytes] = {}
    name = None
    try:
        info = await sub.consumer_info()
        name, pending = info.name, info.num_pending
        while pending > 0:
            for msg in await sub.fetch(min(pending, 1024), timeout=timeout):
                pending = msg.metadata.num_pending
                headers = msg.headers or {}
                if headers.get("KV-Operation") in _GONE or "Nats-Marker-Reason" in headers or not msg.data:
                    continue
                out[msg.subject[len(prefix) :]] = msg.data
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        # Gone at once (an unsubscribed pull consumer would stay until its inactive threshold, and a busy API
        # reached the server's limit of consumers within seconds).
        if name is not None:
            with contextlib.suppress(Exception):
                await js.delete_consumer(stream, name)
    return out


async def watch_bucket(
    nc: NATS,
    bucket: str,
    *,
    on_put: Callable[[str, bytes], None],
    on_delete: Callable[[str], None],
    keys: str = ">",
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

    return await nc.subscribe(f"$KV.{bucket}.{keys}", cb=on_message)


class BucketMirror:
    """A bucket's keys (under ``keys``) kept in this process's memory: read once at start, then every put and delete
    as it happens (``watch_bucket``). Subclasses say what a put and a delete mean (``_put``, ``_gone``)."""

    bucket: str = ""
    keys: str = ">"

    def __init__(self) -> None:
        self.kv: KeyValue | None = None
        self._sub: Subscription | None = None

    async def start(self, nc: NATS, kv: KeyValue):  # noqa: ANN201 - returns self, for chaining
        self.kv = kv
        self._sub = await watch_bucket(nc, self.bucket, on_put=self._put, on_delete=self._gone, keys=self.keys)
        for key, value in (await read_bucket(kv, self.keys)).items():
            self._put(key, value)
        return self

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):  # closing anyway
                await self._sub.unsubscribe()

    def _put(self, key: str, value: bytes) -> None:
        raise NotImplementedError

    def _gone(self, key: str) -> None:
        raise NotImplementedError
