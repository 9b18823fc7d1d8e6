"""What the downloader's handlers need from a media tool, in plain types: no yt-dlp here, so the service process that
runs the handlers never imports it (yt-dlp runs in the slot processes, see ``slots``)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from contracts.options import DownloadOptions
from services.runtime.cancellation import CancelToken

# Called with progress dicts (bytes over all of the item's streams, see StreamMeter), with
# {"status": "postprocess", "postprocessor": name, "pp_status": "started" | "finished", "pp_step", "pp_steps"} around
# each post-processor, and {"status": "postprocessing", "postprocessor", "pp_seconds", "pp_total_seconds", "pp_bytes",
# "pp_speed", "pp_step", "pp_steps"} while its ffmpeg runs (see ``postprocess``).
ProgressHook = Callable[[dict[str, Any]], None]

# The keys of a progress dict the handlers read: a report crossing a process boundary carries only these (yt-dlp's
# own dicts also hold the whole info dict).
REPORT_KEYS = (
    "status",
    "downloaded_bytes",
    "total_bytes",
    "total_bytes_estimate",
    "speed",
    "eta",
    "fragment_index",
    "fragment_count",
    "stream_index",
    "stream_count",
    "format_id",
    "stream_kind",
    "stream_downloaded_bytes",
    "stream_total_bytes",
    "fragment_retries",
    "recorded_seconds",
    "postprocessor",
    "pp_status",
    "pp_step",
    "pp_steps",
    "pp_seconds",
    "pp_total_seconds",
    "pp_bytes",
    "pp_speed",
    # Bytes this call received over the network so far (not those resumed from a partial file): slot_process counts.
    "received_bytes",
)


def plain_report(d: dict[str, Any]) -> dict[str, Any]:
    return {key: d[key] for key in REPORT_KEYS if d.get(key) is not None}


@dataclass(frozen=True)
class Entry:
    index: int
    url: str
    title: str | None
    # The entry's id in its source (a feed's guid travels in the URL yt-dlp gives, so None there) and when it was
    # published, if the source says: what a subscription compares and filters by.
    id: str | None = None
    timestamp: float | None = None


@dataclass(frozen=True)
class Resolution:
    kind: str  # "video" | "playlist"
    title: str | None
    entries: list[Entry]
    truncated: bool
    # A single video's extraction, which its download can start from instead of extracting the URL again.
    probe: dict[str, Any] | None = None
    # A playlist's or channel's own poster and background image (links), when the site gives them.
    images: tuple[str | None, str | None] = (None, None)


@dataclass(frozen=True)
class PlaylistPlace:
    """Where an item sits in its playlist, for names like "%(playlist_title)s/%(playlist_index)03d - …"."""

    title: str | None
    index: int


def _running_ytdlp() -> str | None:
    from yt_dlp.version import __version__

    return __version__


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size: int
    title: str | None
    duration: float | None
    reused: bool = False
    # A live recording stopped before the stream ended (what was recorded is the file).
    stopped_early: bool = False
    # The other files the download made (subtitles, thumbnail, chapters), and what yt-dlp picked (outputs.py).
    files: tuple[Path, ...] = ()
    chosen: dict[str, Any] | None = None
    # The yt-dlp version that made it (the slot's own: an update at run time may differ from the service's).
    engine: str | None = field(default_factory=_running_ytdlp)


# Given the media key of what is about to be downloaded, return a file to use instead, or None to download.
Reuse = Callable[[str], "Downloaded | None"]


class MediaTool(Protocol):
    """Blocking calls, run on a worker thread. ``token`` stops the call when the job is cancelled or the process
    shuts down (raising Aborted); ``max_bytes`` bounds what a download may put on disk (file_too_large)."""

    def resolve(
        self,
        url: str,
        *,
        max_items: int,
        items: str | None = None,
        token: CancelToken | None = None,
        cookies: Path | None = None,
        impersonate: str | None = None,
    ) -> Resolution: ...

    def download(
        self,
        url: str,
        *,
        directory: Path,
        stem: str,
        format: str | None,
        hook: ProgressHook,
        reuse: Reuse | None = None,
        token: CancelToken | None = None,
        max_bytes: int | None = None,
        options: DownloadOptions | None = None,
        playlist: PlaylistPlace | None = None,
        cookies: Path | None = None,
        probe: dict[str, Any] | None = None,
    ) -> Downloaded: ...


# A probe older than this is extracted again: signed media URLs expire, and a queue can be long.
PROBE_TTL = 60.0
PROBE_CACHE_SIZE = 256
# A probe carried to another process (services/downloader/probes.py) is at most this large, compressed.
MAX_CARRIED_PROBE = 1024 * 1024


def _portable(value: Any) -> Any:
    """``value`` as plain JSON data (tuples and sets become lists), or _DROP when it holds something that isn't data
    (then the probe is not carried: a format without its fragments function would be broken). Only yt-dlp's private
    helpers (``__post_extractor`` & co., callables kept for options tubeflow never sets) are left out."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                return _DROP
            converted = _portable(item)
            if converted is _DROP:
                if key.startswith("__"):
                    continue
                return _DROP
            out[key] = converted
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_portable(item) for item in value]
        return _DROP if any(item is _DROP for item in items) else items
    return _DROP


_DROP = object()


def pack_probe(info: dict[str, Any]) -> bytes | None:
    """A resolve's probe as compressed JSON for another process, or None when it can't travel (too large, or
    something in a list that isn't data)."""
    import json
    import zlib

    portable = _portable(info)
    if not isinstance(portable, dict):
        return None
    packed = zlib.compress(json.dumps(portable, separators=(",", ":"), allow_nan=True).encode(), 3)
    return packed if len(packed) <= MAX_CARRIED_PROBE else None


def unpack_probe(data: bytes) -> dict[str, Any] | None:
    import json
    import zlib

    try:
        found = json.loads(zlib.decompress(data, bufsize=MAX_CARRIED_PROBE))
    except (ValueError, zlib.error):
        return None
    return found if isinstance(found, dict) else None


class Probes:
    """What resolving single videos found, kept a short while for their downloads: URL -> (when, raw info)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._kept: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self.reused = 0

    def keep(self, url: str, info: dict[str, Any]) -> None:
        with self._lock:
            self._kept[url] = (self._clock(), info)
            self._kept.move_to_end(url)
            while len(self._kept) > PROBE_CACHE_SIZE:
                self._kept.popitem(last=False)

    def peek(self, url: str) -> dict[str, Any] | None:
        """The probe kept for ``url`` (fresh), left in place."""
        with self._lock:
            kept = self._kept.get(url)
        return None if kept is None or self._clock() - kept[0] > PROBE_TTL else kept[1]

    def take(self, url: str) -> dict[str, Any] | None:
        with self._lock:
            kept = self._kept.pop(url, None)
        if kept is None or self._clock() - kept[0] > PROBE_TTL:
            return None
        self.reused += 1
        return kept[1]
