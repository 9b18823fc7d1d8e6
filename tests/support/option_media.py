"""Local media for the download options (issue 14), made with ffmpeg: a DASH ladder of three heights with separate
audio, a poster and an English subtitle track on an HTML5 page, and a page whose JSON-LD gives chapters, a
description and a date (yt-dlp's generic extractor reads both kinds of page). Served by the media server under
``/streams/<folder>/<file>``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support.media import FFMPEG

HEIGHTS = (480, 360, 240)
SUBTITLES = """WEBVTT

00:00:00.500 --> 00:00:02.000
Hello from tubeflow

00:00:02.500 --> 00:00:04.000
Second line
"""


def make_ladder(source: Path, directory: Path) -> Path:
    """DASH: the source at 480, 360 and 240 lines (H.264, a key frame a second) and its audio, apart."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / "manifest.mpd"
    if manifest.exists():
        return manifest
    maps, sizes = [], []
    for i, height in enumerate(HEIGHTS):
        maps += ["-map", "0:v"]
        sizes += [f"-s:v:{i}", f"{height * 4 // 3 // 2 * 2}x{height}", f"-b:v:{i}", f"{height}k"]
    subprocess.run(
        [
            FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-i", str(source), *maps, "-map", "0:a",
            "-c:v", "libx264", "-preset", "ultrafast", "-g", "15", "-pix_fmt", "yuv420p", *sizes, "-c:a", "copy",
            "-f", "dash", "-seg_duration", "1", "-adaptation_sets", "id=0,streams=v id=1,streams=a", str(manifest),
        ],
        check=True,
    )  # fmt: skip
    return manifest


def make_pages(source: Path, directory: Path, base: str) -> None:
    """``html5.html`` (a <video> with a poster and an English <track>) and ``chapters.html`` (JSON-LD with three
    chapters), with the poster and subtitles beside them; ``base``: the media server's URL (JSON-LD wants absolute
    URLs), which serves ``source`` as /media/source.mp4."""
    media_url = f"{base}/media/source.mp4"
    directory.mkdir(parents=True, exist_ok=True)
    poster = directory / "poster.jpg"
    if not poster.exists():
        subprocess.run(
            [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-ss", "1", "-i", str(source), "-frames:v", "1",
             str(poster)],
            check=True,
        )  # fmt: skip
    (directory / "subs.en.vtt").write_text(SUBTITLES)
    (directory / "html5.html").write_text(
        "<html><head><title>Tubeflow options page</title></head><body>"
        f'<video controls poster="{base}/streams/pages/poster.jpg">'
        f'<source src="{media_url}" type="video/mp4">'
        f'<track kind="subtitles" src="{base}/streams/pages/subs.en.vtt" srclang="en" label="English">'
        "</video></body></html>"
    )
    video = {
        "@context": "https://schema.org",
        "@type": "VideoObject",
        "name": "Chaptered clip",
        "description": "Three chapters of a test pattern",
        "uploadDate": "2026-11-01",
        "duration": "PT6S",
        "thumbnailUrl": f"{base}/streams/pages/poster.jpg",
        "contentUrl": media_url,
        "hasPart": [
            {"@type": "Clip", "name": name, "startOffset": start, "endOffset": end}
            for name, start, end in (("Intro", 0, 2), ("Middle", 2, 4), ("End", 4, 6))
        ],
    }
    (directory / "chapters.html").write_text(
        "<html><head><title>Chaptered clip</title>"
        f'<script type="application/ld+json">{json.dumps(video)}</script></head>'
        "<body><p>A page with a video.</p></body></html>"
    )
