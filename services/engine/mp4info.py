"""What an MP4 (mp4, m4a, mov) holds, read from its boxes in Python: the first video and audio track's codec (their
sample entries' four-character codes, as yt-dlp names codecs: avc1, hvc1, av01, vp09, mp4a, Opus), the picture's
size and the length. Measuring a download this way costs a few reads instead of starting ffmpeg (~25 ms a file on
these machines, more than a small file's whole post-processing); anything else goes to ffmpeg (``postprocess``).

Bounded: at most ``MAX_BOXES`` boxes are looked at and ``MAX_MOOV`` bytes of the movie header read.
"""

from __future__ import annotations

import os
import struct
from typing import Any, BinaryIO, Iterator

MAX_MOOV = 16 * 1024 * 1024
MAX_BOXES = 4096
_CONTAINERS = {b"trak", b"mdia", b"minf", b"stbl"}


def mp4_facts(path: str) -> dict[str, Any] | None:
    """``vcodec``, ``width``, ``height``, ``acodec``, ``duration`` of an MP4 file; None when it is not one (or its
    movie header can't be read)."""
    try:
        with open(path, "rb") as file:
            moov = _moov(file, os.fstat(file.fileno()).st_size)
    except OSError:
        return None
    if moov is None:
        return None
    try:
        return _facts(moov)
    except (struct.error, ValueError):
        return None


def _header(header: bytes, room: int) -> tuple[int, bytes, int] | None:
    """A box's (length, type, header size) from its first bytes (at most 16), ``room`` bytes from its start to the
    end of what holds it; None when the header is cut short or lies about the length."""
    if len(header) < 8:
        return None
    length, kind = struct.unpack_from(">I4s", header)
    skip = 8
    if length == 1:  # a 64-bit length follows
        if len(header) < 16:
            return None
        length, skip = struct.unpack_from(">Q", header, 8)[0], 16
    elif length == 0:  # to the end
        length = room
    if length < skip or length > room:
        return None
    return length, kind, skip


def _moov(file: BinaryIO, size: int) -> bytes | None:
    """The ``moov`` box's payload, found among the top-level boxes (before the media or after it)."""
    offset = 0
    for _ in range(MAX_BOXES):
        file.seek(offset)
        box = _header(file.read(16), size - offset)
        if box is None:
            return None
        length, kind, skip = box
        if kind == b"moov":
            if length - skip > MAX_MOOV:
                return None
            file.seek(offset + skip)
            return file.read(length - skip)
        offset += length
    return None


def _boxes(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    offset = 0
    for _ in range(MAX_BOXES):
        box = _header(data[offset : offset + 16], len(data) - offset)
        if box is None:
            return
        length, kind, skip = box
        yield kind, data[offset + skip : offset + length]
        offset += length


def _child(data: bytes, kind: bytes) -> bytes | None:
    return next((payload for found, payload in _boxes(data) if found == kind), None)


def _path(data: bytes, *kinds: bytes) -> bytes | None:
    for kind in kinds:
        found = _child(data, kind)
        if found is None:
            return None
        data = found
    return data


def _facts(moov: bytes) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    mvhd = _child(moov, b"mvhd")
    if mvhd is not None:
        if mvhd[0] == 1:
            timescale, duration = struct.unpack_from(">IQ", mvhd, 20)
        else:
            timescale, duration = struct.unpack_from(">II", mvhd, 12)
        if timescale and duration and duration != 0xFFFFFFFF:
            facts["duration"] = round(duration / timescale, 3)
    for kind, trak in _boxes(moov):
        if kind != b"trak":
            continue
        handler = _path(trak, b"mdia", b"hdlr")
        stsd = _path(trak, b"mdia", b"minf", b"stbl", b"stsd")
        if handler is None or stsd is None or len(stsd) < 16:
            continue
        role = handler[8:12]
        codec = stsd[12:16].decode("ascii", "replace").strip()
        if role == b"vide" and "vcodec" not in facts:
            facts["vcodec"] = codec
            if len(stsd) >= 8 + 8 + 28:
                # A visual sample entry: 6 reserved, data reference index, 16 bytes predefined, then width, height.
                width, height = struct.unpack_from(">HH", stsd, 8 + 8 + 24)
                if width and height:
                    facts.update(width=width, height=height)
        elif role == b"soun" and "acodec" not in facts:
            facts["acodec"] = codec
    return facts
