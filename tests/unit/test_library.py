"""A download laid out for a media server (issue 30): names, episode numbers, NFO files as Kodi's and Jellyfin's
readers look for them, artwork, and hostile text contained."""

from __future__ import annotations

import os
import shutil
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from pydantic import ValidationError

from contracts.library import Library, show_images
from contracts.options import DownloadOptions
from contracts.presets import EXAMPLES
from services.api.requests import JobRequest
from services.engine.library import place_in_library
from services.engine.options import signature
from tests.support.media import image_size, make_clip, make_image

HOSTILE = '<b>Tom & "Jerry\'s"</b> ../../etc/passwd \x07\x1b[31m'


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:  # noqa: ANN001
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", seconds=2)


def _download(root: Path, clip: Path, name: str) -> Path:
    job = root / "01jobfolderxxxxxxxxxxxxxxx"
    job.mkdir(parents=True, exist_ok=True)
    path = job / f"0001-{name}.mp4"
    shutil.copyfile(clip, path)
    return path


def _info(media_id: str, day: str = "20261203", **extra) -> dict:  # noqa: ANN003
    return {
        "id": media_id,
        "title": f"Video {media_id}",
        "upload_date": day,
        "channel": "Cooking Channel",
        "channel_id": "UC123",
        "extractor_key": "Youtube",
        "duration": 125.0,
        "description": "What we cook today.",
        **extra,
    }


def test_episodes_of_a_show_are_numbered_per_day_stably_with_nfo_and_artwork(tmp_path, clip):
    library = Library(kind="show")
    placed = []
    for media_id, day in (("aaa", "20261203"), ("bbb", "20261203"), ("ccc", "20261204")):
        main = _download(tmp_path, clip, media_id)
        placed.append(place_in_library(_info(media_id, day), main, [], library, tmp_path, None, None))
    season = tmp_path / "Shows" / "Cooking Channel" / "Season 2026"
    names = sorted(p.name for p in season.iterdir())
    assert names == [
        "Cooking Channel - S2026E120301 - Video aaa [aaa]-thumb.jpg",
        "Cooking Channel - S2026E120301 - Video aaa [aaa].mp4",
        "Cooking Channel - S2026E120301 - Video aaa [aaa].nfo",
        "Cooking Channel - S2026E120302 - Video bbb [bbb]-thumb.jpg",
        "Cooking Channel - S2026E120302 - Video bbb [bbb].mp4",
        "Cooking Channel - S2026E120302 - Video bbb [bbb].nfo",
        "Cooking Channel - S2026E120401 - Video ccc [ccc]-thumb.jpg",
        "Cooking Channel - S2026E120401 - Video ccc [ccc].mp4",
        "Cooking Channel - S2026E120401 - Video ccc [ccc].nfo",
    ]
    # The same video again keeps its number (and replaces its file); the job's files are the episode's own.
    again, files = place_in_library(_info("bbb"), _download(tmp_path, clip, "bbb"), [], library, tmp_path, None, None)
    assert again.name == "Cooking Channel - S2026E120302 - Video bbb [bbb].mp4"
    assert {f.suffix for f in files} == {".jpg", ".nfo"} and all(f.parent == season for f in files)
    # The NFO files, as Kodi's and Jellyfin's readers look for them.
    episode = ET.parse(season / "Cooking Channel - S2026E120302 - Video bbb [bbb].nfo").getroot()
    assert episode.tag == "episodedetails"
    fields = {c.tag: c.text for c in episode}
    assert (
        fields.items()
        >= {
            "title": "Video bbb",
            "showtitle": "Cooking Channel",
            "season": "2026",
            "episode": "120302",
            "aired": "2026-12-03",
            "plot": "What we cook today.",
            "runtime": "2",
        }.items()
    )
    uniqueid = episode.find("uniqueid")
    assert uniqueid is not None and uniqueid.text == "bbb" and uniqueid.attrib == {"type": "youtube", "default": "true"}
    show = ET.parse(season.parent / "tvshow.nfo").getroot()
    assert show.tag == "tvshow" and show.findtext("title") == "Cooking Channel"
    assert show.findtext("premiered") == "2026-12-03" and show.findtext("uniqueid") == "UC123"
    for art in (season.parent / "poster.jpg", season.parent / "fanart.jpg", *season.glob("*-thumb.jpg")):
        assert art.read_bytes()[:3] == b"\xff\xd8\xff", art  # JPEG


def test_hostile_titles_and_descriptions_stay_contained_escaped_and_bounded(tmp_path, clip):
    info = _info("x1", title=HOSTILE, channel=HOSTILE, description="<script>" + "&" * 20_000)
    path, files = place_in_library(
        info, _download(tmp_path, clip, "x1"), [], Library(kind="show"), tmp_path, None, None
    )
    assert path.resolve().is_relative_to((tmp_path / "Shows").resolve())
    assert len(path.parent.parent.name.encode()) <= 200 and "/" not in path.parent.parent.name
    nfo = next(f for f in files if f.suffix == ".nfo")
    assert nfo.stat().st_size < 60_000  # the description cut to 10,000 characters (each & escaped: 5 bytes)
    root = ET.parse(nfo).getroot()  # well-formed despite <, &, quotes and control characters
    assert root.findtext("title") == HOSTILE.replace("\x07", "").replace("\x1b", "")
    assert len(root.findtext("plot") or "") == 10_000
    ET.parse(path.parent.parent / "tvshow.nfo")


def test_movies_and_music(tmp_path, clip):
    movie, files = place_in_library(
        _info("m1", title="A Film"), _download(tmp_path, clip, "m1"), [], Library(kind="movie"), tmp_path, "Films", None
    )
    assert movie.relative_to(tmp_path).as_posix() == "Films/A Film (2026)/A Film (2026) [m1].mp4"
    assert ET.parse(movie.parent / "movie.nfo").getroot().findtext("year") == "2026"
    assert (movie.parent / "poster.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    song, _ = place_in_library(
        _info("s1", artist="The Band", album="First", track="Song One", track_number=3),
        _download(tmp_path, clip, "s1"),
        [],
        Library(kind="music", artwork=False),
        tmp_path,
        None,
        None,
    )
    assert song.relative_to(tmp_path).as_posix() == "Music/The Band/First/03 - Song One.mp4"


def test_the_option_and_the_shipped_presets():
    for name in ("jellyfin-show", "plex-show", "kodi-show"):
        fields = {k: v for k, v in EXAMPLES[name].items() if k != "description"}
        request = JobRequest.model_validate({"url": "https://example.org/c", **fields})
        assert request.library is not None and request.library.kind == "show"
    with pytest.raises(ValueError, match="library.kind"):
        JobRequest.model_validate({"url": "https://example.org/c", "library": {"kind": "series"}})


def test_threads_of_one_process_writing_the_same_show_artwork_at_once_all_succeed(tmp_path):
    # Calls share a slot process (lanes): two episodes landing at once both write the show's poster. Each writer's
    # temporary file must be its own, or one renames away the file the other is about to link.
    from services.engine.library import _write_new

    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def write(n: int) -> None:
        start.wait()
        try:
            for round_ in range(200):
                _write_new(tmp_path / f"poster{round_}.jpg", b"x" * (n + 1))
        except BaseException as exc:  # noqa: BLE001 - what the race raises is the finding
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"poster{r}.jpg" for r in range(200))


def test_the_show_s_own_images_from_a_channel_or_playlist_extraction():
    channel = {
        "thumbnails": [
            {"id": "avatar", "url": "https://yt3.example/avatar=s88", "width": 88, "height": 88},
            {"id": "avatar_uncropped", "url": "https://yt3.example/avatar=s0", "preference": 1},
            {"id": "banner_uncropped", "url": "https://yt3.example/banner=s0", "preference": 1},
            {"id": "0", "url": "https://yt3.example/banner=w1060", "width": 1060, "height": 175},
        ]
    }
    assert show_images(channel) == ("https://yt3.example/avatar=s0", "https://yt3.example/banner=s0")
    # A playlist with only its own pictures: the largest, as poster and background alike.
    sized = {"thumbnails": [{"url": "/small.jpg", "width": 10, "height": 10}, {"url": "/big.jpg", "width": 90,
                                                                           "height": 90}]}  # fmt: skip
    assert show_images(sized, base="http://site.example/list/1") == ("http://site.example/big.jpg",) * 2
    # A page's og:image (relative, as yt-dlp's generic extractor gives it); nothing that is not http(s).
    assert (
        show_images({"thumbnail": "/poster.jpg"}, base="http://127.0.0.1:8000/ch.html")
        == ("http://127.0.0.1:8000/poster.jpg",) * 2
    )
    assert show_images({"thumbnail": "file:///etc/passwd", "thumbnails": [{"url": "javascript:x"}]}) == (None, None)
    assert show_images({}) == (None, None)


def test_named_show_images_become_its_poster_and_fanart_and_are_not_part_of_the_media_key(tmp_path, clip):
    poster, fanart = make_image(tmp_path / "p.png", "60x90"), make_image(tmp_path / "f.png", "160x90", "blue")
    served = {"http://site.example/p.png": poster.read_bytes(), "http://site.example/f.png": fanart.read_bytes()}
    asked: list[str] = []

    def fetch(url: str) -> bytes:
        asked.append(url)
        return served[url]

    options = DownloadOptions(library={"kind": "show"}).for_show("Channel", ("http://site.example/p.png", None))
    assert options.library == Library(kind="show", show="Channel", poster="http://site.example/p.png")
    # What the job named itself stays.
    named = DownloadOptions(library={"kind": "show", "show": "Mine", "fanart": "http://site.example/f.png"})
    kept = named.for_show("Channel", ("http://site.example/p.png", "http://site.example/x.png"))
    assert kept.library is not None and (kept.library.show, kept.library.fanart) == (
        "Mine",
        "http://site.example/f.png",
    )
    assert DownloadOptions(library={"kind": "movie"}).for_show("Channel", ("http://a.example/p.png", None)).library == (
        Library(kind="movie")
    )
    assert signature(kept) == signature(DownloadOptions(library={"kind": "show", "show": "Mine"}))

    for n, media_id in enumerate(("aaa", "bbb")):
        place_in_library(
            _info(media_id), _download(tmp_path, clip, media_id), [], kept.library, tmp_path, None, None, fetch
        )
        show = tmp_path / "Shows" / "Mine"
        assert image_size(show / "poster.jpg") == (60, 90) and image_size(show / "fanart.jpg") == (160, 90)
        assert asked == ["http://site.example/p.png", "http://site.example/f.png"], n  # read once, not per episode

    # An image that can't be read: the episode's artwork stands in.
    def failing(url: str) -> bytes:
        raise OSError("refused")

    place_in_library(_info("ccc"), _download(tmp_path, clip, "ccc"), [], Library(kind="show", show="Other",
                     poster="http://site.example/gone.png"), tmp_path, None, None, failing)  # fmt: skip
    assert image_size(tmp_path / "Shows" / "Other" / "poster.jpg") == (160, 120)  # the clip's frame


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://x.example/p.jpg", "http://", "http://a b/p.jpg",
                                 "http://x.example/" + "p" * 2100])  # fmt: skip
def test_a_show_image_that_is_not_an_http_link_is_refused_naming_the_field(url):
    with pytest.raises(ValidationError) as refused:
        JobRequest.model_validate({"url": "https://example.com/v", "library": {"kind": "show", "poster": url}})
    assert refused.value.errors()[0]["loc"][-1] == "poster", refused.value.errors()


def test_a_claim_on_the_show_s_artwork_left_by_a_dead_process_is_taken_over(tmp_path, clip):
    show = tmp_path / "Shows" / "Left"
    show.mkdir(parents=True)
    claim = show / ".poster.jpg.making"
    claim.touch()
    library = Library(kind="show", show="Left")
    place_in_library(_info("a1"), _download(tmp_path, clip, "a1"), [], library, tmp_path, None, None)
    assert not (show / "poster.jpg").exists()  # another episode is making it
    os.utime(claim, (time.time() - 400, time.time() - 400))
    place_in_library(_info("a2"), _download(tmp_path, clip, "a2"), [], library, tmp_path, None, None)
    assert (show / "poster.jpg").read_bytes()[:3] == b"\xff\xd8\xff" and not claim.exists()


def test_a_library_group_names_its_folder_for_a_feed():
    from services.api.routes.library import group_of

    assert group_of("Shows/Cooking/Season 2026/Cooking - S2026E120301 - x [a].mp4") == ("Cooking", "Shows/Cooking")
    assert group_of("tv/Shows/Cooking/Season 2026/x.mp4") == ("Cooking", "tv/Shows/Cooking")
    assert group_of("Music/Artist/Album/01 - x.mp3") == ("Artist", "Music/Artist")
    assert group_of("Podcasts/x.mp3") == ("Podcasts", "Podcasts")
    assert group_of("01m8yjdp19eh49sdtkyk4v9g4w/0001-x.mp4") == ("Downloads", None)
