"""ffmpeg's ``-progress`` output, read the same way by everything that runs ffmpeg: the recorder of live streams, the
post-processors' reporting run (services/engine), the audio extractor.

With ``progress_args`` ffmpeg writes ``key=value`` lines to the given target every ``PERIOD`` seconds, each block
ending with ``progress=continue`` (or ``progress=end``). No yt-dlp here: the extractor's process imports this too.
"""

from __future__ import annotations

import os
import re
import select
from typing import Callable, Iterator

# How often ffmpeg reports, and how often a reader wakes up without a report (to hear a stop).
PERIOD = 0.25
# A line longer than this is not ffmpeg's: dropped. A block holds at most this many keys.
LINE_MAX = 4096
BLOCK_KEYS = 64
# "Duration: 01:02:03.50" in ffmpeg's description of an input.
DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")


def progress_args(target: str) -> list[str]:
    """The arguments that make ffmpeg report to ``target`` (``pipe:1``, ``pipe:FD``) and nothing on stderr."""
    return ["-progress", target, "-stats_period", str(PERIOD), "-nostats"]


def split_line(raw: bytes | str) -> tuple[str, str]:
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    key, _, value = text.strip().partition("=")
    return key, value


def out_seconds(block: dict[str, str]) -> float | None:
    """Seconds of media written so far (``out_time_us``; ffmpeg says N/A before the first frame)."""
    value = block.get("out_time_us", "")
    return max(0, int(value)) / 1_000_000 if value.lstrip("-").isdigit() else None


def number(text: str | None) -> float | None:
    """A non-negative number ffmpeg wrote (``total_size``, ``speed`` without its ``x``), or None (``N/A``)."""
    try:
        value = float(text) if text not in (None, "", "N/A") else None
    except ValueError:
        return None
    return value if value is not None and 0 <= value < float("inf") else None


def duration_of(text: str) -> float | None:
    found = DURATION.search(text)
    if found is None:
        return None
    hours, minutes, seconds = found.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def blocks(fd: int, ended: Callable[[], bool] = lambda: False) -> Iterator[dict[str, str] | None]:
    """Each progress block read from ``fd`` as ffmpeg ends it; None after ``PERIOD`` without one (the reader's
    chance to hear a stop). Ends when ffmpeg closes its end, or when ``ended()`` says so during a quiet spell (the
    process is gone though the pipe is not closed)."""
    pending = b""
    block: dict[str, str] = {}
    while True:
        if not select.select([fd], [], [], PERIOD)[0]:
            if ended():
                return
            yield None
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        *lines, pending = (pending + chunk).split(b"\n")
        if len(pending) > LINE_MAX:
            pending = b""
        finished = False
        for line in lines:
            key, value = split_line(line)
            if len(block) < BLOCK_KEYS:
                block[key] = value
            if key == "progress":
                yield block
                finished, block = True, {}
        if not finished:
            yield None
