"""What an item's state means for its job: when it is done, whether it succeeded, and its share of the bar."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

from contracts.events import AudioFormat, DownloadProgress, ItemQueued
from contracts.views import ItemView, JobView

# Share of an item's progress that belongs to the download when audio is asked for; the rest is extraction.
DOWNLOAD_WEIGHT = 0.8
# Share of the download step that belongs to yt-dlp's post-processing (the merge of video and audio, fixups, …):
# it is counted done when the download completes, so the bar waits below it while ffmpeg merges.
POSTPROCESS_SHARE = 0.1
AUDIO_FORMATS: tuple[str, ...] = get_args(AudioFormat)
# A step (download or extract) in one of these states will not change again in this run.
STEP_DONE = frozenset({"completed", "failed", "skipped"})


def audio_path(source: Path, audio_format: str) -> Path:
    """Where the audio extracted from ``source`` goes: beside it, named after it."""
    target = source.with_suffix(f".{audio_format}")
    return target if target != source else source.with_suffix(f".audio.{audio_format}")


def wants_audio(mode: str) -> bool:
    return mode in ("audio", "both")


# yt-dlp's format for a job that wants the audio alone: the best audio stream where the source offers one apart (no
# video downloaded to be thrown away), else the best file with both.
AUDIO_ONLY_FORMAT = "bestaudio/best"


def download_format(item: ItemQueued) -> str | None:
    """The yt-dlp format an item is downloaded in: the job's own, else the audio alone for an audio job."""
    return item.format or (AUDIO_ONLY_FORMAT if item.mode == "audio" else None)


def item_done(item: ItemView, audio: bool) -> bool:
    if item.download.status in ("failed", "skipped"):
        return True
    if item.download.status != "completed":
        return False
    return not audio or item.extract.status in STEP_DONE


def item_succeeded(item: ItemView, audio: bool) -> bool:
    if item.download.status == "skipped" and item.download.existing is not None:
        return True  # skipped because an earlier job has it (skip_downloaded): what was asked for is there
    if item.download.status != "completed":
        return False
    # A live recording stopped on request is the file that was asked for; no audio is made of it.
    return not audio or item.extract.status == "completed" or item.download.stopped_early


def item_fraction(item: ItemView, audio: bool) -> float:
    """How much of the item is done, 0..1: bytes of the download, then (with audio) the extraction's percent."""
    if item_done(item, audio):
        return 1.0
    download = download_fraction(item)
    if not audio:
        return download
    extract = item.extract.percent / 100.0 if item.extract.status == "running" else 0.0
    return DOWNLOAD_WEIGHT * download + (1.0 - DOWNLOAD_WEIGHT) * extract


def download_fraction(item: ItemView) -> float:
    """How much of the download step is done, 0..1: the streams' bytes, then post-processing."""
    if item.download.status == "completed":
        return 1.0
    percent = item.download.percent
    if percent is None:  # a live recording: no share of the bar until it is a file
        return 0.0
    return ((1.0 - POSTPROCESS_SHARE) * percent + POSTPROCESS_SHARE * item.postprocess.overall) / 100.0


def postprocess_overall(before: float, step: int | None, steps: int | None, percent: float | None) -> float:
    """All of the item's post-processing, 0..100, with ``step`` of ``steps`` at ``percent`` (None: just begun):
    the steps planned share the bar equally. Never lower than ``before``, 100 only when the download completes."""
    if not step or not steps:
        return before
    done = (min(step, steps) - 1 + (percent or 0.0) / 100.0) / steps
    return max(before, min(99.9, round(100.0 * done, 1)))


# What yt-dlp's post-processors (by their own names) do, in the words a page shows: "merging video and audio · 63 %".
POSTPROCESS_LABELS = {
    "Merger": "merging video and audio",
    "Metadata": "writing metadata",
    "ModifyChapters": "cutting segments",
    "SponsorBlock": "fetching SponsorBlock segments",
    "EmbedSubtitle": "embedding subtitles",
    "EmbedThumbnail": "embedding thumbnail",
    "ThumbnailsConvertor": "converting thumbnail",
    "SubtitlesConvertor": "converting subtitles",
    "VideoRemuxer": "remuxing",
    "VideoConvertor": "converting video",
    "ExtractAudio": "extracting audio",
    "SplitChapters": "splitting chapters",
    "Concat": "joining parts",
    "CopyStream": "copying streams",
    "FixupM3u8": "fixing the container",
    "FixupM4a": "fixing the container",
    "FixupStretched": "fixing the aspect ratio",
    "FixupTimestamp": "fixing timestamps",
    "FixupDuration": "fixing the duration",
    "FixupDuplicateMoov": "fixing the container",
}


def postprocess_label(name: str | None) -> str | None:
    if name is None:
        return None
    return POSTPROCESS_LABELS.get(name, f"post-processing ({name})")


def download_percent(data: DownloadProgress, before: float | None) -> float:
    """The item's bar after a progress report: never lower than ``before`` (a size estimate that grows must not move
    it back), and 100 only when the report says the last stream's bytes are all there."""
    before = before or 0.0
    if data.total_bytes:
        raw = 100.0 * data.downloaded_bytes / data.total_bytes
    elif data.fragment_count:
        raw = 100.0 * (data.fragment_index or 0) / data.fragment_count
    else:
        return before
    last_stream = data.stream_index is None or data.stream_count is None or data.stream_index >= data.stream_count
    if raw >= 100.0 and last_stream:
        return 100.0
    return max(before, min(99.9, round(raw, 1)))


def view_files(view: JobView) -> list[str]:
    """Every file a job made, relative to the media root, in item order, each once: downloads, the files made beside
    them (subtitles, thumbnails), extracted audio."""
    out: dict[str, None] = {}
    for item in view.items:
        for relative in (item.download.file, *item.download.files, item.extract.file):
            if relative:
                out.setdefault(relative, None)
    return list(out)
