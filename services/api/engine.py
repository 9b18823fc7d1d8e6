"""What the downloaders' engines can do on real sites, as they publish it (contracts.engine, the engine bucket):
read for GET /api/info, the page, and the check of a job's `impersonate` option. Cached for a few seconds."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from nats.js import JetStreamContext

from contracts.engine import EngineFacts
from services.runtime.nats.topology import ENGINE_BUCKET

CACHE_SECONDS = 5.0
MAX_ENGINES = 256


class EngineBook:
    def __init__(self) -> None:
        self._js: JetStreamContext | None = None
        self._cached: tuple[float, list[EngineFacts]] | None = None

    def start(self, js: JetStreamContext) -> None:
        self._js = js

    async def all(self) -> list[EngineFacts]:
        """Every downloader's facts, freshest first ([] before any published, or without the bucket)."""
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < CACHE_SECONDS:
            return self._cached[1]
        found: list[EngineFacts] = []
        if self._js is not None:
            try:
                kv = await self._js.key_value(ENGINE_BUCKET)
                keys = await kv.keys()
            except Exception:  # no bucket (set up before it existed), or none published: nothing known
                keys = []
            for key in keys[:MAX_ENGINES]:
                try:
                    entry = await kv.get(key)
                    if entry.value:
                        found.append(EngineFacts.model_validate_json(entry.value))
                except Exception:  # gone meanwhile (expired), or not ours to read: skipped
                    continue
        oldest = datetime.min.replace(tzinfo=timezone.utc)
        found.sort(key=lambda facts: facts.checked_at or oldest, reverse=True)
        self._cached = (now, found)
        return found

    async def impersonate_targets(self) -> list[str] | None:
        """The targets some downloader can send, or None when no downloader has said yet."""
        engines = await self.all()
        if not engines:
            return None
        return sorted({target for facts in engines for target in facts.impersonate_targets})
