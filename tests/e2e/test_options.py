"""The download options of issue 14 on local media made with ffmpeg, through the whole stack (API, downloader slots,
real yt-dlp and ffmpeg): the file has the asked height and container, subtitles and thumbnails are embedded or
written, metadata and chapters are in the file, a clip has the asked length, names and folders are as asked."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_e2e import submit, wait_finished
from tests.support.media import FFMPEG

pytestmark = pytest.mark.e2e


def probe(path: Path) -> str:
    """What ffmpeg says about a file (streams, metadata, chapters, duration)."""
    return subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr


def duration(text: str) -> float:
    h, m, s = re.search(r"Duration: (\d+):(\d+):([\d.]+)", text).groups()
    return int(h) * 3600 + int(m) * 60 + float(s)


def video_height(text: str) -> int:
    line = next(line for line in text.splitlines() if "Video:" in line and "attached pic" not in line)
    return int(re.search(r", \d{2,5}x(\d{2,5})", line).group(1))


def run(stack, **body) -> dict:
    view = wait_finished(stack, submit(stack, **body)["id"], timeout=90)
    assert view["status"] == "completed", [view["error"], *[i["error"] for i in view["items"]]]
    return view


def media_root(stack) -> Path:
    return stack.data_dir / "media"


def the_file(stack, view: dict) -> tuple[Path, dict]:
    item = view["items"][0]
    return media_root(stack) / item["download"]["file"], item


def test_quality_picks_the_highest_height_at_or_below(stack, media):
    ladder = media.url("x").replace("/media/x", "/streams/ladder/manifest.mpd")
    asked = {"best": 480, "720": 480, "360": 360, "worst": 240}
    jobs = {quality: submit(stack, url=ladder, quality=quality)["id"] for quality in asked}
    for quality, height in asked.items():
        view = wait_finished(stack, jobs[quality], timeout=90)
        assert view["status"] == "completed", [view["error"], *[i["error"] for i in view["items"]]]
        path, item = the_file(stack, view)
        assert view["options"] == (None if quality == "best" else {**view["options"], "quality": quality})
        assert item["download"]["chosen"]["height"] == height, item["download"]["chosen"]
        text = probe(path)
        assert video_height(text) == height and "Audio:" in text, (quality, text)


def test_container_mkv_remuxes_and_mp4_merges_into_mp4(stack, media):
    ladder = media.url("x").replace("/media/x", "/streams/ladder/manifest.mpd")
    for container, kind in (("mkv", "matroska"), ("mp4", "mp4")):
        path, _ = the_file(stack, run(stack, url=ladder, container=container, quality="worst"))
        assert path.suffix == f".{container}" and kind in probe(path), probe(path)


def page(media, name: str) -> str:
    return f"{media.base}/streams/pages/{name}.html"


def test_subtitles_embedded_or_written_as_files(stack, media):
    embedded = run(stack, url=page(media, "html5"), subtitles={"languages": ["en"]})
    path, item = the_file(stack, embedded)
    assert "Subtitle:" in probe(path), probe(path)
    assert item["download"]["files"] == []  # embedded, so not left beside it
    written = run(stack, url=page(media, "html5"), subtitles={"languages": ["en"], "embed": False, "format": "srt"})
    path, item = the_file(stack, written)
    (subs,) = item["download"]["files"]
    assert subs.endswith(".en.srt") and "Hello from tubeflow" in (media_root(stack) / subs).read_text()
    assert "Subtitle:" not in probe(path)
    # Every file is served.
    assert httpx.get(f"{stack.base}/media/{subs}").text.startswith("1\n")


def test_thumbnail_as_a_file_or_embedded(stack, media):
    _, item = the_file(stack, run(stack, url=page(media, "html5"), thumbnail="file"))
    (thumb,) = item["download"]["files"]
    assert thumb.endswith(".jpg") and (media_root(stack) / thumb).read_bytes()[:2] == b"\xff\xd8"
    path, item = the_file(stack, run(stack, url=page(media, "html5"), thumbnail="embed"))
    assert "attached pic" in probe(path) and item["download"]["files"] == [], probe(path)


def test_metadata_and_chapters_are_embedded_unless_turned_off(stack, media):
    path, _ = the_file(stack, run(stack, url=page(media, "chapters")))
    text = probe(path)
    assert re.search(r"title\s*: Chaptered clip", text) and "Chapter #0:2" in text, text
    path, _ = the_file(stack, run(stack, url=page(media, "chapters"), metadata=False))
    text = probe(path)
    assert not re.search(r"title\s*: Chaptered clip", text) and "Chapter #" not in text, text


def test_split_chapters_makes_a_file_per_chapter(stack, media):
    _, item = the_file(stack, run(stack, url=page(media, "chapters"), split_chapters=True))
    chapters = sorted(item["download"]["files"])
    assert len(chapters) == 3 and all("-chapter-00" in name for name in chapters), chapters
    assert [round(duration(probe(media_root(stack) / name))) for name in chapters] == [2, 2, 2]


def test_a_clip_has_the_asked_length(stack, media):
    path, _ = the_file(stack, run(stack, url=media.url("source.mp4"), clip={"start": "1", "end": "0:04"}))
    assert abs(duration(probe(path)) - 3.0) <= 1.0, probe(path)
    exact, _ = the_file(
        stack, run(stack, url=media.url("source.mp4"), clip={"start": "1.5", "end": "3", "exact": True})
    )
    assert abs(duration(probe(exact)) - 1.5) <= 0.5, probe(exact)


def test_folder_and_template_name_the_file_and_never_overwrite(stack, media):
    folder = f"music/live-{uuid.uuid4().hex[:8]}"
    view = run(stack, url=page(media, "chapters"), output={"folder": folder, "template": "%(title)s [%(id)s].%(ext)s"})
    path, _ = the_file(stack, view)
    assert path == media_root(stack) / folder / "Chaptered clip [chapters].mp4", path
    assert httpx.get(f"{stack.base}/media/{folder}/Chaptered clip [chapters].mp4").status_code == 200
    # Two different media under one literal name: the second gets " (2)", the first is untouched.
    first = run(stack, url=media.url("clip1.mp4"), output={"folder": folder, "template": "same.%(ext)s"})
    second = run(stack, url=media.url("clip2.mp4"), output={"folder": folder, "template": "same.%(ext)s"})
    assert the_file(stack, first)[0].name == "same.mp4" and the_file(stack, second)[0].name == "same (2).mp4"
    assert the_file(stack, first)[0].stat().st_size != the_file(stack, second)[0].stat().st_size


def test_a_title_starting_with_a_dot_names_a_visible_file(stack, media):
    # A direct file's title is its name: ".hack-SIGN" would have made a hidden ".hack-SIGN.mp4".
    shutil.copyfile(media.root / "clip1.mp4", media.root / ".hack-SIGN.mp4")
    folder = f"anime-{uuid.uuid4().hex[:8]}"
    view = run(stack, url=media.url(".hack-SIGN.mp4"), output={"folder": folder, "template": "%(title)s.%(ext)s"})
    path, _ = the_file(stack, view)
    assert path == media_root(stack) / folder / "hack-SIGN.mp4", path
    assert view["items"][0]["title"] == ".hack-SIGN"


def test_a_playlist_with_a_folder_gets_the_playlist_layout(stack, media):
    folder = f"pl-{uuid.uuid4().hex[:8]}"
    view = run(stack, url=media.feed_url("clip1.mp4,clip2.mp4"), output={"folder": folder})
    files = sorted(item["download"]["file"] for item in view["items"])
    assert files == [f"{folder}/Test feed/001 - clip1.mp4", f"{folder}/Test feed/002 - clip2.mp4"], files


@pytest.mark.parametrize(
    "body, field, code",
    [
        ({"quality": "999"}, "quality", "invalid"),
        ({"subtitles": {"languages": ["english!"]}}, "subtitles.languages", "invalid_language"),
        ({"subtitles": {"languages": []}}, "subtitles.languages", "invalid"),
        ({"clip": {"start": "2:00", "end": "1:00"}}, "clip", "invalid_clip"),
        ({"clip": {"start": "soon"}}, "clip.start", "invalid_clip"),
        ({"output": {"template": "../%(title)s.%(ext)s"}}, "output.template", "invalid_template"),
        ({"output": {"template": "%(title)s"}}, "output.template", "invalid_template"),
        ({"output": {"template": "%(__class__)s.%(ext)s"}}, "output.template", "invalid_template"),
        ({"output": {"folder": "/etc"}}, "output.folder", "invalid_folder"),
        ({"output": {"folder": "a/../../b"}}, "output.folder", "invalid_folder"),
        ({"output": {"folder": "C:/x"}}, "output.folder", "invalid_folder"),
        ({"output": {"folder": "a\x00b"}}, "output.folder", "invalid_folder"),
        ({"output": {"folder": "x" * 250}}, "output.folder", "invalid_folder"),
        ({"output": {"folder": "01m83k4jf56nq6vkg3q02xgxav/x"}}, "output.folder", "invalid_folder"),
        # Issue 23: without a folder, a template naming another job's folder wrote into it.
        ({"output": {"template": "01m83k4jf56nq6vkg3q02xgxav/pwn-%(id)s.%(ext)s"}}, "output", "invalid_template"),
        ({"cookies": "Bad Name"}, "cookies", "invalid_cookies"),
        ({"sponsorblock": {"remove": ["ads"]}}, "sponsorblock.remove", "invalid"),
        ({"thumbnail": "poster"}, "thumbnail", "invalid"),
    ],
)
def test_bad_options_are_refused_naming_the_field(stack, media, body, field, code):
    response = httpx.post(f"{stack.base}/api/jobs", json={"url": media.url("clip1.mp4"), **body}, timeout=10)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert any(e["field"].startswith(field) and e["code"] == code for e in errors), errors


def test_info_gives_the_versions_and_yt_dlps_age(stack):
    from importlib.metadata import version

    info = httpx.get(f"{stack.base}/api/info", timeout=10).json()
    assert info["yt_dlp"] == version("yt-dlp") and info["tubeflow"] == version("tubeflow")
    assert isinstance(info["yt_dlp_age_days"], int) and info["yt_dlp_stale"] == (info["yt_dlp_age_days"] > 60)
    assert info["ffmpeg"] and re.match(r"\d+\.\d+", info["nats_server"]), info
