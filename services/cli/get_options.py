"""`tubeflow get`'s flags for a job's fields (the same names the API takes), and the body they make: only what was
given is sent, so a preset's fields are not overridden by defaults nobody chose."""

from __future__ import annotations

import argparse
from typing import Any

QUALITIES = ("best", "2160", "1440", "1080", "720", "480", "360", "worst")


def _list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def add_job_arguments(get: argparse.ArgumentParser) -> None:
    job = get.add_argument_group("what to get (the API's job fields; unset ones come from --preset or defaults)")
    job.add_argument("--preset", help="a preset's name (GET /api/presets)")
    job.add_argument("--mode", choices=("video", "audio", "both"))
    job.add_argument("--audio-format", choices=("mp3", "m4a", "opus", "flac", "wav"))
    job.add_argument("--format", help="yt-dlp format selector (the expert's escape hatch)")
    job.add_argument("--quality", choices=QUALITIES, help="the highest video at or below this height")
    job.add_argument("--container", choices=("any", "mp4", "mkv", "webm"))
    job.add_argument("--video-codec", choices=("any", "h264", "vp9", "av1"), help="a preference, never a failure")
    job.add_argument("--subs", type=_list, metavar="LANGS", help="subtitle languages, e.g. en,de (or all)")
    job.add_argument("--auto-subs", action="store_true", help="also automatic subtitles")
    job.add_argument("--subs-as-files", action="store_true", help="keep subtitles as files instead of embedding")
    job.add_argument("--subs-format", choices=("srt", "vtt", "ass"))
    job.add_argument("--thumbnail", choices=("none", "file", "embed"))
    job.add_argument("--no-metadata", action="store_true", help="embed no title, date, description or chapters")
    job.add_argument("--sponsorblock-remove", type=_list, metavar="CATS", help="SponsorBlock categories to cut out")
    job.add_argument("--sponsorblock-mark", type=_list, metavar="CATS", help="SponsorBlock categories to mark")
    job.add_argument("--clip", metavar="START-END", help="only this range, e.g. 1:30-2:45 (either side may be empty)")
    job.add_argument("--exact-clip", action="store_true", help="cut at exactly those times (re-encodes, slower)")
    job.add_argument("--split-chapters", action="store_true", help="a file per chapter, besides the whole")
    job.add_argument("--folder", help="a folder under the media root, e.g. music/live")
    job.add_argument("--template", help="a yt-dlp name template, e.g. '%%(title)s [%%(id)s].%%(ext)s'")
    job.add_argument("--cookies", metavar="PROFILE", help="a stored cookie profile (PUT /api/cookies/PROFILE)")
    job.add_argument(
        "--impersonate",
        metavar="TARGET",
        help="send a browser's fingerprint for sites behind bot protection: chrome, safari… (`tubeflow doctor` lists them)",
    )
    job.add_argument("--playlist-items", metavar="SPEC", help='which playlist entries, e.g. "1-3,7"')
    job.add_argument("--priority", choices=("high", "normal", "low"), help="waiting items of higher priority go first")
    job.add_argument(
        "--skip-downloaded", action="store_true", help="skip items an earlier job already downloaded (same options)"
    )
    job.add_argument(
        "--ignore-schedule",
        action="store_true",
        help="start now whatever the download window, outside the bandwidth budget and daily caps",
    )


def job_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"url": args.url}
    for name in (
        "preset", "mode", "audio_format", "format", "quality", "container", "video_codec", "thumbnail", "cookies",
        "impersonate", "playlist_items", "priority",
    ):  # fmt: skip
        if getattr(args, name, None) is not None:
            body[name] = getattr(args, name)
    if args.subs:
        subtitles: dict[str, Any] = {"languages": args.subs, "auto": args.auto_subs, "embed": not args.subs_as_files}
        if args.subs_format:
            subtitles["format"] = args.subs_format
        body["subtitles"] = subtitles
    if args.no_metadata:
        body["metadata"] = False
    if args.sponsorblock_remove or args.sponsorblock_mark:
        body["sponsorblock"] = {"remove": args.sponsorblock_remove or [], "mark": args.sponsorblock_mark or []}
    if args.clip:
        start, _, end = args.clip.partition("-")
        clip: dict[str, Any] = {"start": start or None, "end": end or None}
        if args.exact_clip:
            clip["exact"] = True
        body["clip"] = clip
    if args.split_chapters:
        body["split_chapters"] = True
    if args.skip_downloaded:
        body["skip_downloaded"] = True
    if getattr(args, "ignore_schedule", False):
        body["schedule"] = "ignore"
    if args.folder or args.template:
        body["output"] = {"folder": args.folder, "template": args.template}
    return body
