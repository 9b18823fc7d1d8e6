"""Recording a live stream: ffmpeg copies it to a file until the stream ends, the job is stopped, or the time limit;
what was recorded is kept as a finished file.

yt-dlp would hand a live stream to an ffmpeg of its own that reports nothing while it runs and can only be killed.
Here ffmpeg runs with ``-progress pipe:1``: every report (bytes, seconds recorded) goes to the hook, and the hook
raising (a cancel, a shutdown) makes this send ffmpeg ``q``, so it closes the file properly. The output is Matroska:
it takes any codec as it comes (HLS's ADTS AAC, which mp4 refuses without a filter, VP9, Opus) and stays playable
if ffmpeg dies midway. Runs on a worker thread.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import imageio_ffmpeg

from services.engine.guard_proxy import FFMPEG_PROTOCOLS
from services.runtime import ffmpeg_progress
from services.runtime.failures import MediaError

log = logging.getLogger("tubeflow.recording")

# How long ffmpeg may take to close the file after `q` before it is killed (the file stays playable then too).
STOP_GRACE = 10.0


def record(
    url: str,
    target: Path,
    *,
    headers: dict[str, str] | None,
    max_seconds: float,
    hook: Callable[[dict[str, Any]], None],
    max_bytes: int | None = None,
) -> tuple[int, float, bool]:
    """Record ``url`` into ``target``; returns (size, seconds recorded, stopped early). ``hook`` gets
    ``{"status": "recording", "downloaded_bytes", "recorded_seconds", "speed"}`` about four times a second, and
    stops the recording by raising."""
    partial = target.with_name(f"{target.name}.{os.getpid()}-{secrets.token_hex(4)}.part")
    header_args = ["-headers", "".join(f"{k}: {v}\r\n" for k, v in headers.items())] if headers else []
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *header_args,
        "-protocol_whitelist", FFMPEG_PROTOCOLS, "-i", url, "-map", "0", "-c", "copy", "-t", str(int(max_seconds)), *(["-fs", str(max_bytes)] if max_bytes else []),
        "-f", "matroska",
        *ffmpeg_progress.progress_args("pipe:1"), str(partial),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    size, seconds, started, stopped = 0, 0.0, time.monotonic(), False
    try:
        assert process.stdout is not None
        # A live stream can go quiet for a while (ffmpeg waits for the next segment): the hook is asked anyway, so a
        # cancel is heard within a quarter of a second.
        for block in ffmpeg_progress.blocks(process.stdout.fileno(), ended=lambda: process.poll() is not None):
            if block is None:
                hook({"status": "waiting"})
                continue
            size = int(ffmpeg_progress.number(block.get("total_size")) or size)
            seconds = ffmpeg_progress.out_seconds(block) or seconds
            elapsed = time.monotonic() - started
            hook(
                {
                    "status": "recording",
                    "downloaded_bytes": size,
                    "recorded_seconds": round(seconds, 2),
                    "speed": size / elapsed if elapsed > 0 else None,
                }
            )
            if block.get("progress") == "end":
                break
    except BaseException:
        stopped = True
        _stop(process)
        if not partial.exists() or partial.stat().st_size == 0:
            partial.unlink(missing_ok=True)
            raise
    code = process.wait()
    if not stopped and code != 0 and (not partial.exists() or partial.stat().st_size == 0):
        message = (process.stderr.read() if process.stderr else b"").decode(errors="replace").strip()[-500:]
        partial.unlink(missing_ok=True)
        raise MediaError("recording_failed", f"ffmpeg exited with {code}: {message or 'no output'}")
    os.replace(partial, target)
    size = target.stat().st_size
    # Stopped by ffmpeg at the time or size limit: what it has is the recording, ended early.
    return size, seconds, stopped or seconds >= max_seconds - 1 or bool(max_bytes and size >= max_bytes * 0.98)


def _stop(process: subprocess.Popen) -> None:
    """Ask ffmpeg to finish (``q`` on its input) so the file is closed properly; kill it if it doesn't."""
    try:
        if process.stdin is not None:
            process.stdin.write(b"q")
            process.stdin.close()
        process.wait(STOP_GRACE)
    except (OSError, subprocess.TimeoutExpired):
        process.kill()
        process.wait()
