"""yt-dlp's post-processors and ffmpeg, made to say how far they are, stop when asked, and tell what came out.

yt-dlp runs every post-processor's ffmpeg (the merge of video and audio, metadata, SponsorBlock's cuts, embedding,
remuxing, fixups, chapter splits) through one method, ``FFmpegPostProcessor.real_run_ffmpeg``, and reports nothing
until it ends. Here, at that one place:

- the ffmpeg gets ``-progress`` on a pipe of its own; a thread reads it and hands the call's hook a report every
  quarter of a second (seconds of media written, of how many, bytes, speed), so the bar moves through post-processing;
- the same thread asks the hook between reports, so a stop is heard within a quarter of a second: the ffmpeg is
  killed then, the output it was writing is removed, and the stop goes on up as it would from a download's hook;
- without ffprobe (imageio-ffmpeg ships ffmpeg alone), what yt-dlp would ask ffprobe (a file's duration, its
  streams) is read from ffmpeg's own description of its input, so SponsorBlock's cuts and the post-processors that
  look at streams work, and a finished download is measured the same way (``probe``).

The hook and the post-processing plan live in the YoutubeDL's holder (``ytdlp``): no hook there, no reports.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from yt_dlp.postprocessor import ffmpeg as ytdlp_ffmpeg
from yt_dlp.postprocessor.ffmpeg import FFmpegPostProcessor
from yt_dlp.utils import Popen

from services.runtime import ffmpeg_progress
from services.runtime.ffmpeg_progress import number

# What a probe may read of ffmpeg's description, and how long it may take.
PROBE_MAX_BYTES = 1 << 20
PROBE_TIMEOUT = 30.0


@dataclass
class _Run:
    """One post-processor's ffmpeg: what it reports to, and whether a stop ended it."""

    name: str
    hook: Callable[[dict[str, Any]], None]
    total: float | None
    offset: float
    step: int | None
    steps: int | None
    proc: subprocess.Popen | None = None
    reader: threading.Thread | None = None
    stopped: BaseException | None = None
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Where the length is learnt when nobody said it: the plan (kept for the steps after), by probing the first input
    # once the step turns out to take a while (a quick step never pays for a probe).
    plan: dict[str, Any] = field(default_factory=dict)
    first_input: str | None = None
    executable: str | None = None

    def tell(self, block: dict[str, str] | None) -> None:
        """Report a progress block to the hook (None: nothing new, only a chance to hear a stop); a hook that raises
        (the call was stopped) ends the ffmpeg."""
        if self.stopped is not None:
            return
        report = {"status": "waiting"} if block is None else self._report(block)
        if block is not None and block.get("progress") == "end":
            # ffmpeg's last word: the step's completion says it right after (and a step quicker than a report
            # period makes no event of its own).
            report = {"status": "waiting"}
        try:
            self.hook(report)
        except BaseException as exc:  # noqa: BLE001 - a stop, handed on once the ffmpeg is gone
            with self.lock:
                self.stopped = exc
                if self.proc is not None:
                    _kill(self.proc)

    def _report(self, block: dict[str, str]) -> dict[str, Any]:
        if block.get("progress") == "continue" and self.total is None:  # running for a quarter of a second already
            self._learn_length()
        out = ffmpeg_progress.out_seconds(block)
        if out is not None:
            self.seconds = max(self.seconds, out)
        return {
            "status": "postprocessing",
            "postprocessor": self.name,
            "pp_seconds": round(self.offset + self.seconds, 3),
            "pp_total_seconds": self.total,
            "pp_bytes": _int(block.get("total_size")),
            "pp_speed": number((block.get("speed") or "").rstrip("x")),
            "pp_step": self.step,
            "pp_steps": self.steps,
        }

    def _learn_length(self) -> None:
        """Nobody said how long the media is (a direct file): ffmpeg's description of the input does, once for all
        the steps after this one too."""
        if self.first_input and "length_probed" not in self.plan:
            self.plan["length_probed"] = True
            length = number((probe(self.first_input, self.executable) or {}).get("format", {}).get("duration"))
            self.total = self.plan["duration"] = length


_current = threading.local()


class _ReportingPopen(Popen):
    """yt-dlp's Popen; within a post-processor's run (``_current.run``), its ffmpeg writes progress to a pipe that a
    thread of ours reads."""

    def __init__(self, args: Any, *remaining: Any, **kwargs: Any) -> None:
        run: _Run | None = getattr(_current, "run", None)
        if run is None or run.proc is not None or not isinstance(args, list) or "-i" not in args:
            super().__init__(args, *remaining, **kwargs)
            return
        read, write = os.pipe()
        args = [args[0], *ffmpeg_progress.progress_args(f"pipe:{write}"), *args[1:]]
        kwargs["pass_fds"] = (*kwargs.get("pass_fds", ()), write)
        try:
            super().__init__(args, *remaining, **kwargs)
        except BaseException:
            os.close(read)
            raise
        finally:
            os.close(write)
        with run.lock:
            run.proc = self
            if run.stopped is not None:
                _kill(self)
        run.reader = threading.Thread(target=_follow, args=(run, read), name="pp-progress", daemon=True)
        run.reader.start()


def _follow(run: _Run, fd: int) -> None:
    """Hand each progress block to the run until ffmpeg closes the pipe; between blocks, listen for a stop."""
    try:
        for block in ffmpeg_progress.blocks(fd):
            run.tell(block)
    finally:
        os.close(fd)


def _kill(proc: subprocess.Popen) -> None:
    try:
        proc.kill()
    except OSError:
        pass


def _int(text: str | None) -> int | None:
    value = number(text)
    return int(value) if value is not None else None


# --- the run --------------------------------------------------------------------------------------------------

_real_run_ffmpeg = FFmpegPostProcessor.real_run_ffmpeg
_get_metadata_object = FFmpegPostProcessor.get_metadata_object


def _reporting_run(self: FFmpegPostProcessor, input_path_opts: list, output_path_opts: list, **kwargs: Any) -> str:
    holder = getattr(self._downloader, "_tubeflow_hook", None)
    hook = holder.get("hook") if holder else None
    if hook is None:
        return _real_run_ffmpeg(self, input_path_opts, output_path_opts, **kwargs)
    inputs = {path for path, _ in input_path_opts if path}
    outputs = [path for path, _ in output_path_opts if path and path != "-" and path not in inputs]
    plan = holder.get("pp_plan") or {}
    run = _Run(
        name=self.pp_key(),
        hook=hook,
        # The media's length; a piece of it (a chapter cut out, ``-t``) counts against the whole, after the pieces
        # before it (``done_seconds`` of this step).
        total=plan.get("duration") or _length(input_path_opts),
        offset=plan.get("done_seconds", 0.0),
        step=plan.get("step"),
        steps=plan.get("steps"),
        plan=plan,
        first_input=input_path_opts[0][0] if input_path_opts else None,
        executable=self.executable,
    )
    _current.run = run
    try:
        stderr = _real_run_ffmpeg(self, input_path_opts, output_path_opts, **kwargs)
    except BaseException:
        # A failed or killed ffmpeg leaves what it was writing half done: nobody may take it for a result.
        for path in outputs:
            _unlink(path)
        if run.stopped is not None:
            raise run.stopped from None
        raise
    finally:
        _current.run = None
        if run.reader is not None:
            run.reader.join()
    if run.stopped is not None:  # asked to stop as ffmpeg ended: the step is not taken as done
        for path in outputs:
            _unlink(path)
        raise run.stopped
    if plan:
        plan["done_seconds"] = run.offset + run.seconds
    if outputs and isinstance(stderr, str):
        # What ffmpeg said of the file it made: the download's facts without probing it again, when it is the file
        # the download ends with (written as NAME.temp.EXT, then renamed).
        holder["last_output"] = (os.path.basename(outputs[-1]).replace(".temp.", ".", 1), stderr[-PROBE_MAX_BYTES:])
    return stderr


def _length(input_path_opts: list) -> float | None:
    """The length asked of the first input (``-t`` among its options: a chapter being cut out), if any."""
    for _, opts in input_path_opts[:1]:
        opts = list(opts or ())
        if "-t" in opts[:-1]:
            return number(str(opts[opts.index("-t") + 1]))
    return None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _metadata_object(self: FFmpegPostProcessor, path: str, opts: list | None = None) -> dict[str, Any]:
    """ffprobe's JSON for ``path`` (the fields yt-dlp reads), from ffmpeg's description when there is no ffprobe."""
    if self.probe_basename == "ffprobe":
        return _get_metadata_object(self, path, opts or [])
    described = probe(path, self.executable)
    if described is None:
        from yt_dlp.utils import PostProcessingError

        raise PostProcessingError(f"ffmpeg could not read {os.path.basename(path)}")
    return described


def install() -> None:
    """Route yt-dlp's post-processors' ffmpeg through the above (once per process; the originals stay reachable)."""
    FFmpegPostProcessor.real_run_ffmpeg = _reporting_run  # type: ignore[method-assign]
    FFmpegPostProcessor.get_metadata_object = _metadata_object  # type: ignore[method-assign]
    ytdlp_ffmpeg.Popen = _ReportingPopen  # type: ignore[misc]


# --- what a file is -------------------------------------------------------------------------------------------

_SECTION = re.compile(r"^(Input|Output) #(\d+), ([^,]+(?:,[^,\s]+)*), (?:from|to) ")
_STREAM = re.compile(r"^\s+Stream #\d+:(\d+)(?:\[[^\]]*\])?(?:\(([^)]*)\))?: (\w+): (.*)$")
_SIZE = re.compile(r"(?:^|[ ,])(\d{1,5})x(\d{1,5})(?:[ ,\[]|$)")
_FPS = re.compile(r"(\d+(?:\.\d+)?) fps")
_KBPS = re.compile(r"(\d+(?:\.\d+)?) kb/s")
_TAG_CODE = re.compile(r"\(([0-9A-Za-z]{4}) / 0x[0-9A-Fa-f]+\)")
_TAG = re.compile(r"^\s{4,}(\w[\w-]*)\s*: (.*)$")


def describe(text: str, section: str = "Input") -> dict[str, Any] | None:
    """ffmpeg's description of its first input (or output) as ffprobe would give it: ``format`` (format_name,
    duration, bit_rate, as strings) and ``streams`` (index, codec_type, codec_name, width, height, r_frame_rate as
    a number, bit_rate, disposition, tags). None when ffmpeg described no such file."""
    found: dict[str, Any] | None = None
    stream: dict[str, Any] | None = None
    for line in text.splitlines():
        head = _SECTION.match(line)
        if head:
            if found is not None:
                break
            if head.group(1) == section and head.group(2) == "0":
                found = {"format": {"format_name": head.group(3)}, "streams": []}
            continue
        if found is None:
            continue
        if not line.startswith(" "):
            break
        if line.lstrip().startswith("Duration: "):
            length = ffmpeg_progress.duration_of(line)
            if length is not None:
                found["format"]["duration"] = f"{length:.6f}"
            kbps = _KBPS.search(line)
            if kbps:
                found["format"]["bit_rate"] = str(int(float(kbps.group(1)) * 1000))
            continue
        described = _STREAM.match(line)
        if described:
            stream = _stream(*described.groups())
            found["streams"].append(stream)
            continue
        tag = _TAG.match(line)
        if tag and stream is not None and len(stream["tags"]) < 32:
            stream["tags"][tag.group(1).lower()] = tag.group(2).strip()[:200]
    return found


def _stream(index: str, language: str | None, kind: str, rest: str) -> dict[str, Any]:
    codec = rest.split(" ", 1)[0].rstrip(",")
    stream: dict[str, Any] = {
        "index": int(index),
        "codec_type": kind.lower(),
        "codec_name": codec,
        "disposition": {"default": int("(default)" in rest), "attached_pic": int("(attached pic)" in rest)},
        "tags": {"language": language} if language else {},
    }
    tag = _TAG_CODE.search(rest)
    if tag:
        stream["codec_tag_string"] = tag.group(1)
    size = _SIZE.search(rest)
    if kind == "Video" and size:
        stream["width"], stream["height"] = int(size.group(1)), int(size.group(2))
    fps = _FPS.search(rest)
    if fps:
        stream["r_frame_rate"] = float(fps.group(1))
    kbps = _KBPS.search(rest)
    if kbps:
        stream["bit_rate"] = str(int(float(kbps.group(1)) * 1000))
    return stream


def probe(path: str, executable: str | None = None) -> dict[str, Any] | None:
    """What ``path`` holds, as ``describe`` gives it, from ``ffmpeg -i`` (no output: ffmpeg describes its input and
    stops). None when ffmpeg could not read it."""
    import imageio_ffmpeg

    command = [executable or imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", f"file:{path}"]
    try:
        done = subprocess.run(command, capture_output=True, timeout=PROBE_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return describe(done.stderr[-PROBE_MAX_BYTES:].decode("utf-8", "replace"))


def measured_run(stderr: str) -> dict[str, Any]:
    """The facts of a file ffmpeg just made, from what it said while making it: the streams it wrote, and the length
    of its first input."""
    written = describe(stderr, "Output")
    read = describe(stderr, "Input")
    if written is None:
        return {}
    if read is not None and "duration" in read["format"]:
        written["format"]["duration"] = read["format"]["duration"]
    return measured(written)


def measured(described: dict[str, Any] | None) -> dict[str, Any]:
    """The facts of a ``download.chosen`` that a probe gives: height, width, fps, codecs, duration, bitrate (kb/s)."""
    if not described:
        return {}
    facts: dict[str, Any] = {}
    video = next((s for s in described["streams"] if s["codec_type"] == "video" and not _picture(s)), None)
    audio = next((s for s in described["streams"] if s["codec_type"] == "audio"), None)
    # Codecs named as yt-dlp (and an MP4's boxes, see ``mp4info``) name them: the container's code where it has one
    # (avc1, mp4a), else ffmpeg's name (vp9, opus).
    if video is not None:
        facts.update(vcodec=_codec(video), width=video.get("width"), height=video.get("height"))
        facts["fps"] = video.get("r_frame_rate")
    if audio is not None:
        facts["acodec"] = _codec(audio)
    duration = number(described["format"].get("duration"))
    bitrate = number(described["format"].get("bit_rate"))
    facts["duration"] = duration
    facts["bitrate"] = round(bitrate / 1000, 1) if bitrate else None
    return {key: value for key, value in facts.items() if value is not None}


def _codec(stream: dict[str, Any]) -> str:
    return stream.get("codec_tag_string") or stream["codec_name"]


def _picture(stream: dict[str, Any]) -> bool:
    """A cover picture embedded as a video stream (a thumbnail in an mp4 or an m4a), not the video."""
    return bool(stream["disposition"].get("attached_pic")) or stream["codec_name"] in ("mjpeg", "png", "webp")
