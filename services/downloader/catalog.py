"""The media catalog: which file already holds a given media (extractor, id, format), so no job downloads it twice.

Entries live in the KV bucket ``tubeflow_media``; a download in progress holds a claim in ``tubeflow_claims`` (which
expires by itself if its holder dies), so concurrent jobs for the same media wait for one download instead of racing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from pathlib import Path

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.engine.media import Downloaded

log = logging.getLogger("tubeflow.catalog")

WAIT_FOR_CLAIM = 600.0
# A claim holder re-stamps its claim this often; a claim not re-stamped for CLAIM_STALE seconds belongs to a holder
# that died (SIGKILL, lost node), and the next worker takes it over.
CLAIM_REFRESH = 2.0
CLAIM_STALE = 8.0


def catalog_key(media_key: str) -> str:
    return hashlib.sha256(media_key.encode()).hexdigest()[:48]


def _skip_prefix(existing: str) -> str:
    return "skip." + hashlib.sha256(existing.encode()).hexdigest()[:48]


class MediaCatalog:
    def __init__(self, media: KeyValue, claims: KeyValue, media_dir: Path, worker: str) -> None:
        self._media = media
        self._claims = claims
        self._media_dir = media_dir
        self._worker = worker
        self._refreshers: dict[str, asyncio.Task] = {}

    def _stamp(self) -> bytes:
        return json.dumps({"worker": self._worker, "at": time.time()}).encode()

    async def _refresh(self, key: str) -> None:
        while True:
            await asyncio.sleep(CLAIM_REFRESH)
            try:
                await self._claims.put(catalog_key(key), self._stamp())
            except Exception as exc:
                log.debug("claim refresh failed: %s", exc)

    def _hold(self, key: str) -> None:
        self._refreshers[key] = asyncio.get_running_loop().create_task(self._refresh(key))

    async def find(self, key: str) -> Downloaded | None:
        try:
            entry = await self._media.get(catalog_key(key))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        record = json.loads(entry.value)
        path = (self._media_dir / record["file"]).resolve()
        # Only a file that is still there, complete, and inside the media root counts.
        if not path.is_relative_to(self._media_dir.resolve()) or not path.is_file():
            return None
        if path.stat().st_size != record["size"]:
            return None
        files = tuple(self._media_dir / name for name in record.get("files", []))
        return Downloaded(
            path,
            record["size"],
            record.get("title"),
            record.get("duration"),
            reused=True,
            files=tuple(f for f in files if f.is_file()),
            chosen=record.get("chosen"),
            engine=None,
        )

    # Skipped items that point at a file (`skip_downloaded`): ``skip.<file hash>.<job>.<item>``, so the deletion of
    # the job that has the file can tell them (`item.existing_deleted`) instead of leaving them pointing at nothing.

    async def note_skip(self, existing: str, job: str, item: str) -> None:
        record = json.dumps({"file": existing, "job": job, "item": item}).encode()
        await self._media.put(f"{_skip_prefix(existing)}.{job}.{item}", record)

    async def skips_of(self, existing: str) -> dict[str, dict]:
        """The skipped items pointing at ``existing`` (a file relative to the media root), by their keys."""
        from services.runtime.nats import read_bucket

        found = await read_bucket(self._media, f"{_skip_prefix(existing)}.>")
        return {key: json.loads(value) for key, value in found.items()}

    async def forget(self, key: str) -> None:
        with contextlib.suppress(KeyNotFoundError):
            await self._media.delete(key)

    async def claim(self, key: str) -> bool:
        """Take the claim if nobody holds it, or if its holder stopped re-stamping it (died)."""
        try:
            await self._claims.create(catalog_key(key), self._stamp())
            self._hold(key)
            return True
        except KeyWrongLastSequenceError:
            pass
        try:
            entry = await self._claims.get(catalog_key(key))
        except KeyNotFoundError:
            return False  # released just now: the next round tries again
        try:
            stamped = json.loads(entry.value or b"{}").get("at", 0.0)
        except ValueError:
            stamped = 0.0
        if time.time() - stamped < CLAIM_STALE:
            return False
        try:
            await self._claims.update(catalog_key(key), self._stamp(), last=entry.revision)
        except KeyWrongLastSequenceError:
            return False
        log.info("took over the stale claim of %s", entry.value)
        self._hold(key)
        return True

    async def release(self, key: str) -> None:
        refresher = self._refreshers.pop(key, None)
        if refresher is not None:
            refresher.cancel()
        try:
            await self._claims.delete(catalog_key(key))
        except Exception as exc:  # it expires by itself
            log.debug("claim release failed: %s", exc)

    async def record(self, key: str, downloaded: Downloaded) -> None:
        record = {
            "file": downloaded.path.resolve().relative_to(self._media_dir.resolve()).as_posix(),
            "size": downloaded.size,
            "title": downloaded.title,
            "duration": downloaded.duration,
            "files": [f.resolve().relative_to(self._media_dir.resolve()).as_posix() for f in downloaded.files],
            "chosen": downloaded.chosen,
        }
        await self._media.put(catalog_key(key), json.dumps(record).encode())

    def reuse_or_claim(self, loop: asyncio.AbstractEventLoop, claimed: list[str], stop) -> "callable":  # noqa: ANN001
        """A blocking callback for yt-dlp's worker thread: an existing file, or None once we hold the claim."""

        def reuse(key: str) -> Downloaded | None:
            deadline = time.monotonic() + WAIT_FOR_CLAIM
            while True:
                found = asyncio.run_coroutine_threadsafe(self.find(key), loop).result(30)
                if found is not None:
                    return found
                if asyncio.run_coroutine_threadsafe(self.claim(key), loop).result(30):
                    # Ours from now on: whatever fails next (NATS away), the caller releases it, or its refresher
                    # would keep it alive for nobody and the next try would wait for it (WAIT_FOR_CLAIM).
                    claimed.append(key)
                    # The holder before us may have recorded its file and let go between our look and our claim:
                    # look once more now that nobody else can start it.
                    found = asyncio.run_coroutine_threadsafe(self.find(key), loop).result(30)
                    if found is not None:
                        claimed.remove(key)
                        asyncio.run_coroutine_threadsafe(self.release(key), loop).result(30)
                        return found
                    return None
                if time.monotonic() > deadline:
                    return None  # the holder takes too long: download it ourselves
                stop()  # raises if the job was cancelled or the process is stopping
                time.sleep(0.25)

        return reuse
