"""Serving produced files under the media root, with single-range requests, never outside the root."""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path
from typing import AsyncIterator

import anyio
from litestar import Response
from litestar.exceptions import NotFoundException
from litestar.response import Stream

CHUNK = 256 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def resolve_media(root: Path, relative: str) -> Path:
    root = root.resolve()
    relative = relative.lstrip("/")
    if not relative or "\x00" in relative:
        raise NotFoundException("no such file")
    try:
        target = (root / relative).resolve()
        found = target.is_relative_to(root) and target.is_file()
    except (OSError, ValueError):  # e.g. a name longer than the file system allows (ENAMETOOLONG)
        found = False
    if not found:
        raise NotFoundException("no such file")
    return target


async def _read(path: Path, start: int, length: int) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as f:
        await f.seek(start)
        left = length
        while left > 0:
            chunk = await f.read(min(CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk


def media_response(path: Path, range_header: str | None, head: bool = False) -> Response:
    size = path.stat().st_size
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    headers = {
        "Accept-Ranges": "bytes",
        # A downloaded file is a stranger's bytes: never sniffed into something else, never run as a page with our
        # origin, and saved rather than shown unless it is audio or video.
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
    }
    if not media_type.startswith(("audio/", "video/")):
        headers["Content-Disposition"] = "attachment"
    start, end, status = 0, size - 1, 200
    if range_header:
        match = _RANGE.fullmatch(range_header.strip())
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:
                start = max(0, size - int(match.group(2)))
            if start > end or start >= size:
                return Response(b"", status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    length = end - start + 1 if size else 0
    headers["Content-Length"] = str(length)
    if head or length == 0:
        return Response(b"", status_code=status, headers=headers, media_type=media_type)
    return Stream(_read(path, start, length), status_code=status, headers=headers, media_type=media_type)
