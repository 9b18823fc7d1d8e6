"""Podcast feeds of a folder or a preset (issue 30), kept in FEEDS_BUCKET: each person's own feed of a folder (the
files that land under it) or of a preset (the jobs made with it), opened by a key in its URL (podcast apps can't send
a token). Two records per feed: ``n.<digest of kind, maker, name>`` (the feed, its key included, for its maker) and
``k.<SHA-256 of the key>`` (which feed a URL's key opens); a new key or a revocation removes the old key's record
first, so an old URL stops working at once."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Literal

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from contracts.options import DownloadOptions
from services.runtime.clock import utcnow
from services.runtime.nats.kv import read_bucket

FeedKind = Literal["folder", "preset"]
MAX_FEEDS_PER_PERSON = 100


class Feed(BaseModel):
    kind: FeedKind
    name: str
    maker: str
    # Whose jobs it lists (None: everyone's, when an admin or an installation without accounts made it).
    owner: str | None
    key: str
    created_at: datetime

    def lists(self, owner: str | None, preset: str | None, options: DownloadOptions | None) -> bool:
        """A job with this owner, preset and options belongs in the feed."""
        if self.owner is not None and owner != self.owner:
            return False
        if self.kind == "preset":
            return preset == self.name
        folder = (options or DownloadOptions()).folder()
        if folder is None:
            return False
        # Its files may land under the feed's folder: the job's folder is it, inside it, or holds it (a show's
        # folder under a library's Shows).
        return folder == self.name or folder.startswith(self.name + "/") or self.name.startswith(folder + "/")

    def holds(self, relative: str) -> bool:
        """A file (relative to the media root) of a job the feed lists is in the feed."""
        return self.kind == "preset" or relative.startswith(self.name + "/")


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


class FeedStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def _get(self, key: str) -> Feed | None:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        return Feed.model_validate_json(entry.value) if entry.value else None

    async def named(self, kind: FeedKind, name: str, maker: str) -> Feed | None:
        return await self._get("n." + _digest(kind, maker, name))

    async def opened_by(self, key: str) -> Feed | None:
        """The feed whose URL carries this key (None: no feed has it, or it was replaced or revoked)."""
        found = await self._get("k." + _digest(key))
        return found if found is not None and secrets.compare_digest(found.key, key) else None

    async def make(self, kind: FeedKind, name: str, maker: str, owner: str | None) -> Feed:
        """A new key for the maker's feed of this folder or preset (made if there is none)."""
        await self.revoke(kind, name, maker)
        feed = Feed(kind=kind, name=name, maker=maker, owner=owner, key=secrets.token_urlsafe(24), created_at=utcnow())
        data = feed.model_dump_json().encode()
        await self._kv.put("k." + _digest(feed.key), data)
        await self._kv.put("n." + _digest(kind, maker, name), data)
        return feed

    async def revoke(self, kind: FeedKind, name: str, maker: str) -> bool:
        old = await self.named(kind, name, maker)
        if old is None:
            return False
        await self._kv.delete("k." + _digest(old.key))
        await self._kv.delete("n." + _digest(kind, maker, name))
        return True

    async def of(self, maker: str | None) -> list[Feed]:
        """The feeds this person made (None: everyone's), oldest first."""
        stored = await read_bucket(self._kv, "n.>")
        feeds = [Feed.model_validate_json(value) for value in stored.values() if value]
        return sorted((f for f in feeds if maker is None or f.maker == maker), key=lambda f: f.created_at)
