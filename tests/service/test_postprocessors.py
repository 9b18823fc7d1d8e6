"""Every post-processor's ffmpeg reports progress through the one place yt-dlp runs it (services/engine/postprocess):
SponsorBlock's cuts, subtitle and thumbnail embedding, the metadata remux, a remux to another container, each driven
directly through yt-dlp's API on a local file (SponsorBlock itself needs YouTube ids), with real ffmpeg and no
ffprobe."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yt_dlp
from yt_dlp.postprocessor import (
    EmbedThumbnailPP,
    FFmpegEmbedSubtitlePP,
    FFmpegMetadataPP,
    FFmpegVideoRemuxerPP,
    ModifyChaptersPP,
)

import services.engine.ytdlp  # noqa: F401 - installs the reporting run
from services.engine.postprocess import describe, probe
from tests.support.media import FFMPEG

HOURS = 3


@pytest.fixture(scope="module")
def long_file(media, long_merge, tmp_path_factory) -> Path:
    """The long merge source as one mp4 with video and audio (seconds of ffmpeg work for every step)."""
    path = tmp_path_factory.mktemp("pp") / "long.mp4"
    manifest = media.root / long_merge / "manifest.mpd"
    subprocess.run([FFMPEG, "-v", "error", "-y", "-i", str(manifest), "-c", "copy", str(path)], check=True)
    return path


def _run(pp_class, info: dict, tmp_path: Path, **kwargs) -> list[dict]:
    reports: list[dict] = []
    ydl = yt_dlp.YoutubeDL({"quiet": True, "ffmpeg_location": FFMPEG})
    ydl._tubeflow_hook = {  # what services/engine/ytdlp.py keeps per instance during a download
        "hook": reports.append,
        "pp_plan": {"steps": 1, "step": 1, "duration": info.get("duration"), "done_seconds": 0.0},
    }
    pp_class(ydl, **kwargs).run(info)
    return [r for r in reports if r["status"] == "postprocessing"]


def _copy(source: Path, tmp_path: Path, ext: str = "mp4") -> Path:
    target = tmp_path / f"video.{ext}"
    if ext == source.suffix.lstrip("."):
        target.write_bytes(source.read_bytes())
    else:
        subprocess.run([FFMPEG, "-v", "error", "-y", "-i", str(source), "-c", "copy", str(target)], check=True)
    return target


def _assert_progress(reports: list[dict], name: str) -> None:
    seconds = [r["pp_seconds"] for r in reports]
    assert reports, f"{name} reported nothing"
    assert {r["postprocessor"] for r in reports} == {name}
    assert seconds == sorted(seconds) and seconds[-1] > 0, seconds
    assert all(r["pp_total_seconds"] == pytest.approx(HOURS * 3600, abs=2) for r in reports), reports[:2]


def test_sponsorblock_cuts_report_progress_and_cut(long_file, tmp_path):
    path = _copy(long_file, tmp_path)
    sponsor = {"start_time": 600.0, "end_time": 1800.0, "category": "sponsor", "title": "Sponsor", "type": "skip"}
    info = {"filepath": str(path), "title": "t", "ext": "mp4", "duration": HOURS * 3600.0, "id": "x"}
    info.update(sponsorblock_chapters=[sponsor], __real_download=True)
    reports = _run(ModifyChaptersPP, info, tmp_path, remove_sponsor_segments={"sponsor"})
    _assert_progress(reports, "ModifyChapters")
    # The cut happened (measured without ffprobe, as yt-dlp itself did to decide on it).
    length = float(probe(str(path))["format"]["duration"])
    assert length == pytest.approx(HOURS * 3600 - 1200, abs=15)


def test_subtitle_and_thumbnail_embedding_report_progress(long_file, tmp_path):
    subtitles = tmp_path / "video.en.vtt"
    subtitles.write_text("WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nhello\n")
    path = _copy(long_file, tmp_path)
    info = {
        "filepath": str(path),
        "ext": "mp4",
        "duration": HOURS * 3600.0,
        "requested_subtitles": {"en": {"ext": "vtt", "filepath": str(subtitles)}},
        "__files_to_move": {},
    }
    _assert_progress(_run(FFmpegEmbedSubtitlePP, info, tmp_path), "EmbedSubtitle")
    assert any(s["codec_type"] == "subtitle" for s in probe(str(path))["streams"])

    # Into an mkv ffmpeg attaches it (an mp4 goes to mutagen, no ffmpeg).
    thumbnail = tmp_path / "video.jpg"
    subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "color=red:size=64x36", "-frames:v", "1", str(thumbnail)], check=True)  # fmt: skip
    mkv = _copy(long_file, tmp_path, "mkv")
    info = {
        "filepath": str(mkv),
        "ext": "mkv",
        "duration": HOURS * 3600.0,
        "thumbnails": [{"filepath": str(thumbnail)}],
    }
    _assert_progress(_run(EmbedThumbnailPP, info, tmp_path), "EmbedThumbnail")
    assert any(s["tags"].get("mimetype") == "image/jpeg" for s in probe(str(mkv))["streams"])


def test_the_metadata_remux_and_a_container_remux_report_progress(long_file, tmp_path):
    path = _copy(long_file, tmp_path)
    info = {"filepath": str(path), "ext": "mp4", "duration": HOURS * 3600.0, "title": "A title", "id": "x"}
    _assert_progress(_run(FFmpegMetadataPP, info, tmp_path), "Metadata")
    info = {"filepath": str(path), "ext": "mp4", "duration": HOURS * 3600.0, "__files_to_move": {}}
    _assert_progress(_run(FFmpegVideoRemuxerPP, info, tmp_path, preferedformat="mkv"), "VideoRemuxer")
    assert (tmp_path / "video.mkv").is_file()


def test_a_step_of_unknown_length_learns_it_once_it_takes_a_while(long_file, tmp_path):
    # A direct file: nobody said how long it is. The step's first report is a quarter of a second in; from then on
    # the length is known (ffmpeg's description of its input), so the bar has a percent.
    path = _copy(long_file, tmp_path)
    reports = _run(FFmpegMetadataPP, {"filepath": str(path), "ext": "mp4", "title": "A title", "id": "x"}, tmp_path)
    assert len(reports) >= 2, reports
    assert reports[-1]["pp_total_seconds"] == pytest.approx(HOURS * 3600, abs=2)


def test_ffmpegs_description_reads_like_ffprobe():
    text = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'file:v.mp4':
  Metadata:
    major_brand     : isom
  Duration: 01:02:03.50, start: 0.000000, bitrate: 119 kb/s
  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive), 1920x1080 [SAR 1:1 DAR 16:9], 39 kb/s, 29.97 fps, 25 tbr, 12800 tbn (default)
    Metadata:
      handler_name    : VideoHandler
  Stream #0:1[0x2](eng): Audio: opus, 48000 Hz, stereo, fltp, 69 kb/s (default)
  Stream #0:2: Video: mjpeg (Baseline), yuvj420p(pc), 64x36, 90k tbr, 90k tbn (attached pic)
    Metadata:
      mimetype        : image/jpeg
At least one output file must be specified
"""  # noqa: E501
    described = describe(text)
    assert described["format"] == {
        "format_name": "mov,mp4,m4a,3gp,3g2,mj2",
        "duration": "3723.500000",
        "bit_rate": "119000",
    }
    video, audio, picture = described["streams"]
    assert (video["codec_name"], video["width"], video["height"], video["r_frame_rate"]) == ("h264", 1920, 1080, 29.97)
    assert video["codec_tag_string"] == "avc1" and "codec_tag_string" not in audio
    assert (audio["codec_type"], audio["codec_name"], audio["tags"]) == ("audio", "opus", {"language": "eng"})
    assert picture["disposition"]["attached_pic"] == 1 and picture["tags"]["mimetype"] == "image/jpeg"
    assert describe("garbage\nmore garbage") is None
