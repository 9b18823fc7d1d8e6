"""What a resolve found for a single video, carried with its item to whichever downloader takes the ticket (issue 25).

The process that resolved a job keeps the probe for its own download (services.engine.media.Probes); another
process taking the item's ticket would extract the URL again — one more request to the site for each such item,
which counts toward its rate limits and soft bans. So the probe also goes, compressed, into PROBES_BUCKET under
``job.item`` (expiring with the local probe's TTL), and a downloader without a local probe reads it from there.

Writing is off the job's path (a task); a probe that can't travel (too large, not plain data) is not carried, and
its download extracts again, as before."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from services.engine.media import pack_probe, unpack_probe

log = logging.getLogger("tubeflow.probes")


class ProbeCarrier:
    def __init__(self, kv: KeyValue | None) -> None:
        self._kv = kv
        self._writing: set[asyncio.Task] = set()

    def carry(self, job: str, item: str, probe: dict[str, Any] | None) -> None:
        if self._kv is None or probe is None:
            return
        task = asyncio.create_task(self._put(f"{job}.{item}", probe))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _put(self, key: str, probe: dict[str, Any]) -> None:
        try:
            packed = await asyncio.to_thread(pack_probe, probe)
            if packed is not None and self._kv is not None:
                await self._kv.put(key, packed)
        except Exception as exc:  # not carried: the other process extracts again
            log.debug("probe for %s not carried: %s", key, exc)

    async def fetch(self, job: str, item: str) -> dict[str, Any] | None:
        if self._kv is None:
            return None
        try:
            entry = await self._kv.get(f"{job}.{item}")
        except KeyNotFoundError:
            return None
        except Exception as exc:  # the bucket away: extract again
            log.debug("probe for %s.%s not read: %s", job, item, exc)
            return None
        return await asyncio.to_thread(unpack_probe, entry.value) if entry.value else None
