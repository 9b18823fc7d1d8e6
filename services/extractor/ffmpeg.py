"""The ffmpeg adapter: audio extraction as an asyncio subprocess, with progress read from ``-progress pipe:1``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from pathlib import Path
from typing import Callable

import imageio_ffmpeg

from contracts.items import audio_path  # noqa: F401 - where it always was imported from
from services.runtime.failures import MediaError
from services.runtime.ffmpeg_progress import duration_of, out_seconds, progress_args, split_line

# format -> (ffmpeg muxer, codec arguments)
AUDIO_FORMATS: dict[str, tuple[str, list[str]]] = {
    "mp3": ("mp3", ["-c:a", "libmp3lame", "-q:a", "2"]),
    "m4a": ("ipod", ["-c:a", "aac", "-b:a", "192k"]),
    "opus": ("opus", ["-c:a", "libopus", "-b:a", "128k"]),
    "flac": ("flac", ["-c:a", "flac"]),
    "wav": ("wav", ["-c:a", "pcm_s16le"]),
}


# Which download an audio file was made from, kept on the file itself (a user extended attribute): an existing audio
# file is reused only when it was made from the same download (issue 23: another job's `song.mp3`, placed by its
# own template, was taken as this job's audio and deleted with that job). Where the filesystem keeps no extended
# attributes, nothing is ever reused: the audio is made again under a free name.
PROVENANCE = "user.tubeflow.source"


def source_identity(source: Path) -> str:
    """A download as its audio remembers it: the file itself (inode, size, modification time), whatever name it has
    (a reused download is hard-linked into each job's folder: one file, two names)."""
    stat = source.stat()
    return f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}"


def made_from(path: Path) -> str | None:
    """The download (``source_identity``) ``path`` was made from, or None when nobody said."""
    try:
        return os.getxattr(path, PROVENANCE).decode(errors="replace")
    except OSError:
        return None


async def extract_audio(
    source: Path,
    target: Path,
    audio_format: str,
    *,
    duration: float | None,
    on_progress: Callable[[float, float | None], None],
    max_bytes: int | None = None,
    source_key: str | None = None,
) -> int:
    """Write the audio of ``source`` to ``target``; ``on_progress(percent, out_time)`` as ffmpeg reports; the file
    says it was made from ``source_key`` (see ``made_from``).

    Returns the size of the output. Raises MediaError (``ffmpeg_error``/``no_audio``) with ffmpeg's message, or
    ``file_too_large`` when the output reached ``max_bytes`` (ffmpeg stops writing there: ``-fs``).
    """
    # Its own partial file: two jobs reusing one download may extract the same audio at the same time.
    partial = target.with_name(f"{target.name}.{os.getpid()}-{secrets.token_hex(4)}.part")
    process = await asyncio.create_subprocess_exec(
        *_command(source, partial, audio_format, max_bytes),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    run = _Run(duration, on_progress)
    try:
        await asyncio.gather(run.read_stderr(process.stderr), run.read_progress(process.stdout))
        code = await process.wait()
    except asyncio.CancelledError:
        if process.returncode is None:
            process.kill()
            await process.wait()
        partial.unlink(missing_ok=True)
        raise
    if code == 0 and max_bytes and partial.exists() and partial.stat().st_size >= max_bytes:
        partial.unlink(missing_ok=True)
        raise MediaError(
            "file_too_large", f"the audio of {source.name} reached {max_bytes} bytes (TUBEFLOW_MAX_FILESIZE)"
        )
    if source_key is not None and partial.exists():
        with contextlib.suppress(OSError):  # no extended attributes here: never reused, see PROVENANCE
            os.setxattr(partial, PROVENANCE, source_key.encode())
    return _keep_output(source, partial, target, code, run.stderr_tail)


def _command(source: Path, output: Path, audio_format: str, max_bytes: int | None = None) -> list[str]:
    muxer, codec = AUDIO_FORMATS[audio_format]
    return [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-y",
        # The input is a file a stranger's server sent: whatever it is (an HLS playlist in disguise, a concat
        # script), ffmpeg reads local files only, never the network.
        "-protocol_whitelist",
        "file,pipe",
        "-i",
        str(source),
        *(["-fs", str(max_bytes)] if max_bytes else []),
        "-vn",
        "-map",
        "0:a:0?",
        *codec,
        *progress_args("pipe:1"),
        "-f",
        muxer,
        str(output),
    ]


class _Run:
    """What one ffmpeg run tells: the input's duration and the last lines on stderr, the progress on stdout."""

    def __init__(self, duration: float | None, on_progress: Callable[[float, float | None], None]) -> None:
        self.duration = duration
        self.on_progress = on_progress
        self.stderr_tail: list[bytes] = []

    async def read_stderr(self, stream: asyncio.StreamReader | None) -> None:
        assert stream is not None
        async for line in stream:
            if self.duration is None:
                self.duration = duration_of(line.decode("utf-8", "replace"))
            self.stderr_tail.append(line.rstrip())
            del self.stderr_tail[:-20]

    async def read_progress(self, stream: asyncio.StreamReader | None) -> None:
        """``-progress pipe:1`` blocks: ``out_time_us=…`` lines, and ``progress=end`` when done."""
        assert stream is not None
        async for raw in stream:
            key, value = split_line(raw)
            if key == "out_time_us" and (seconds := out_seconds({key: value})) is not None:
                whole = self.duration
                self.on_progress(min(100.0, 100.0 * seconds / whole) if whole else 0.0, seconds)
            elif key == "progress" and value == "end":
                self.on_progress(100.0, self.duration)


def _keep_output(source: Path, partial: Path, target: Path, code: int, stderr_tail: list[bytes]) -> int:
    """Move a finished output into place and return its size, or raise with what ffmpeg said went wrong."""
    if code != 0:
        partial.unlink(missing_ok=True)
        text = b"\n".join(stderr_tail).decode(errors="replace")
        if "does not contain any stream" in text or "matches no streams" in text:
            raise MediaError("no_audio", f"{source.name} has no audio stream")
        last = [line for line in text.splitlines() if line.strip()][-3:]
        raise MediaError("ffmpeg_error", f"ffmpeg exited with {code}: " + " | ".join(last))
    if not partial.exists() or partial.stat().st_size == 0:
        partial.unlink(missing_ok=True)
        raise MediaError("no_audio", f"{source.name} has no audio stream")
    os.replace(partial, target)
    return target.stat().st_size
