"""A job's download options (contracts.options) in yt-dlp's terms: the command-line arguments they stand for, turned
into YoutubeDL params by yt-dlp's own option parser, so each option means exactly what it means to yt-dlp users
(including the order of the post-processors). Only typed, validated values go in; never a client's raw string."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from contracts.options import DownloadOptions
from services.runtime.jsonfile import SettingsFileError, read_json_object

SORT_CODEC = {"h264": "vcodec:h264", "vp9": "vcodec:vp9", "av1": "vcodec:av01"}
SORT_CONTAINER = {"mp4": "ext:mp4:m4a", "webm": "ext:webm:webm"}


def _clip_section(options: DownloadOptions) -> str:
    assert options.clip is not None
    start, end = options.clip.range()
    return f"*{start:g}-{'inf' if end is None else f'{end:g}'}"


def ytdlp_args(options: DownloadOptions) -> list[str]:
    """The yt-dlp command-line arguments that ask for ``options``."""
    args: list[str] = []
    sort = []
    if options.quality == "worst":
        sort += ["+res", "+size", "+br"]
    elif options.quality != "best":
        sort.append(f"res:{options.quality}")  # the highest up to it; the nearest above when there is none
    if options.video_codec != "any":
        sort.append(SORT_CODEC[options.video_codec])
    if options.container in SORT_CONTAINER:
        sort.append(SORT_CONTAINER[options.container])
    if sort:
        args += ["-S", ",".join(sort)]
    if options.container != "any":
        args += ["--merge-output-format", options.container, "--remux-video", options.container]
    if options.subtitles is not None:
        subs = options.subtitles
        args += ["--sub-langs", ",".join(subs.languages), "--convert-subs", subs.format]
        args.append("--write-subs")
        if subs.auto:
            args.append("--write-auto-subs")
        if subs.embed:
            # Written, embedded, then removed (without the compat option yt-dlp keeps the files it was told to write).
            args += ["--embed-subs", "--compat-options", "no-keep-subs"]
    if options.thumbnail != "none":
        args += ["--embed-thumbnail" if options.thumbnail == "embed" else "--write-thumbnail"]
        args += ["--convert-thumbnails", "jpg"]
    if options.metadata:
        args += ["--embed-metadata", "--embed-chapters"]
    if options.sponsorblock is not None:
        if options.sponsorblock.remove:
            args += ["--sponsorblock-remove", ",".join(options.sponsorblock.remove)]
        if options.sponsorblock.mark:
            args += ["--sponsorblock-mark", ",".join(options.sponsorblock.mark)]
    if options.clip is not None:
        args += ["--download-sections", _clip_section(options)]
        if options.clip.exact:
            args.append("--force-keyframes-at-cuts")
    if options.split_chapters:
        args.append("--split-chapters")
    return args


@functools.lru_cache(maxsize=1)
def _defaults() -> dict[str, Any]:
    import yt_dlp

    return yt_dlp.parse_options([]).ydl_opts


@functools.lru_cache(maxsize=64)
def _params(args: tuple[str, ...]) -> dict[str, Any]:
    import yt_dlp

    parsed = yt_dlp.parse_options(list(args)).ydl_opts
    # Post-processors that run on whole playlists never run here: every item is downloaded on its own.
    parsed["postprocessors"] = [pp for pp in parsed.get("postprocessors") or [] if pp.get("when") != "playlist"]
    defaults = {**_defaults(), "postprocessors": []}
    return {key: value for key, value in parsed.items() if key != "outtmpl" and defaults.get(key) != value}


def ytdlp_params(options: DownloadOptions | None) -> dict[str, Any]:
    """The YoutubeDL params ``options`` change (over yt-dlp's defaults); {} for none."""
    if options is None:
        options = DownloadOptions()
    return dict(_params(tuple(ytdlp_args(options))))


# What changes nothing about the file made: the cookie profile (and whose), whether an earlier job's file is skipped, the
# browser fingerprint asked for, where a show's poster comes from (a channel's image link may change between checks).
NOT_IN_SIGNATURE: dict[str, Any] = {
    **dict.fromkeys(("cookies", "cookies_owner", "skip_downloaded", "impersonate", "schedule"), True),
    "library": {"poster": True, "fanart": True},
}


def signature(options: DownloadOptions | None) -> str:
    """What the options change about the file a download makes, as a stable string: part of its media key (a 720p
    download is not a 1080p one) and of which pooled YoutubeDL serves it."""
    if options is None:
        options = DownloadOptions()
    return json.dumps(options.model_dump(exclude=NOT_IN_SIGNATURE, exclude_defaults=True), sort_keys=True)


# What the operator's params may not change: how tubeflow drives yt-dlp (its hooks, logger, paths and names, the
# address guard's proxy) and what would print to the terminal.
RESERVED_PARAMS = frozenset(
    {
        "logger", "progress_hooks", "postprocessor_hooks", "paths", "outtmpl", "proxy", "quiet", "noprogress",
        "no_warnings", "noplaylist", "playlistend", "playlist_items", "extract_flat", "cookiefile",
        "cookiesfrombrowser", "ffmpeg_location", "external_downloader_args", "skip_unavailable_fragments",
        "js_runtimes", "remote_components", "impersonate",
    }
)  # fmt: skip


class OperatorOptionsError(SettingsFileError):
    pass


def operator_params(path: Path | None) -> dict[str, Any]:
    """TUBEFLOW_YTDLP_OPTIONS_FILE: a JSON object of extra YoutubeDL params (e.g. ``extractor_args`` for a PO-token
    provider), trusted because only the operator writes it; never anything a job sends. Read at start: a bad file
    stops the downloader with its reason."""
    if path is None:
        return {}
    loaded = read_json_object(path, "TUBEFLOW_YTDLP_OPTIONS_FILE", "YoutubeDL params")
    reserved = sorted(RESERVED_PARAMS & set(loaded))
    if reserved:
        raise OperatorOptionsError(
            f"TUBEFLOW_YTDLP_OPTIONS_FILE {path}: tubeflow sets {', '.join(reserved)} itself (TUBEFLOW_PROXY for a "
            "proxy, TUBEFLOW_JS_RUNTIME, TUBEFLOW_IMPERSONATE; remote code is never fetched)"
        )
    return loaded
