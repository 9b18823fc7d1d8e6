"""A bound on what yt-dlp's extractors read into memory: every page, feed, manifest and API answer (all of them go
through ``InfoExtractor._webpage_read_content``, which reads a response whole) stops at ``MAX_PAGE_BYTES`` and
``PAGE_DEADLINE`` seconds, and fails `page_too_large` / `page_too_slow` instead of growing the process.

Measured before (issue 23): an endless text/html job URL was read 48 MiB in ~3 s (+137-181 MB RSS), bounded only by
the 600 s resolve deadline. Media bodies are not read here (yt-dlp's downloaders stream them to disk, bounded by
TUBEFLOW_MAX_FILESIZE)."""

from __future__ import annotations

import time
from typing import Any

from services.runtime.failures import MediaError

# The largest real pages are a few MB (a YouTube watch page ~1.5 MB, its player script ~3 MB, a long live stream's
# DASH manifest several MB): 16 MiB leaves room and bounds the cost of a hostile one.
MAX_PAGE_BYTES = 16 * 1024 * 1024
PAGE_DEADLINE = 120.0
_CHUNK = 256 * 1024


class _Bounded:
    """A response whose ``read()`` of everything stops at the bound (chunked, so the deadline is checked between
    chunks; each chunk is still bounded by yt-dlp's socket timeout)."""

    def __init__(self, response: Any, limit: int, deadline: float) -> None:
        self._response, self._limit, self._deadline = response, limit, deadline

    def read(self, size: int | None = None, *args: Any) -> bytes:
        if size is not None and size >= 0:
            return self._response.read(size, *args)
        started = time.monotonic()
        parts, total = [], 0
        while chunk := self._response.read(_CHUNK):
            total += len(chunk)
            if total > self._limit:
                raise MediaError(
                    "page_too_large", f"{self._response.url} is larger than {self._limit / (1024 * 1024):g} MiB"
                )
            if time.monotonic() - started > self._deadline:
                raise MediaError("page_too_slow", f"{self._response.url} took longer than {self._deadline:g} s to read")
            parts.append(chunk)
        return b"".join(parts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)


def bound_page_reads(limit: int = MAX_PAGE_BYTES, deadline: float = PAGE_DEADLINE) -> None:
    """Install the bound in this process (once; the slot processes call it at start)."""
    from yt_dlp.extractor.common import InfoExtractor

    original = InfoExtractor._webpage_read_content
    if getattr(original, "tubeflow_bounded", False):
        return

    def read_content(self: Any, urlh: Any, *args: Any, **kwargs: Any) -> Any:
        return original(self, _Bounded(urlh, limit, deadline), *args, **kwargs)

    read_content.tubeflow_bounded = True  # type: ignore[attr-defined]
    InfoExtractor._webpage_read_content = read_content  # type: ignore[method-assign]
