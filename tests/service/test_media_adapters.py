"""The yt-dlp and ffmpeg adapters against local media: real downloads, real errors, real extraction."""

from __future__ import annotations

import subprocess

import pytest

from services.engine.ytdlp import YtDlp
from services.extractor.ffmpeg import audio_path, extract_audio
from services.runtime.addresses import AddressPolicy, parse_networks
from services.runtime.failures import MediaError
from tests.conftest import free_port
from tests.support.media import FFMPEG, as_served

LOOPBACK_ONLY = AddressPolicy(allowed_networks=parse_networks("127.0.0.0/8"))


@pytest.fixture(scope="module")
def ytdlp() -> YtDlp:
    return YtDlp(size=2, policy=LOOPBACK_ONLY)


def test_the_default_policy_refuses_to_fetch_from_loopback(media):
    before = len(media.requests)
    with pytest.raises(MediaError) as caught:
        YtDlp(size=1).resolve(media.url("clip1.mp4"), max_items=10)
    assert caught.value.code == "forbidden_address"
    assert len(media.requests) == before, "the media server was contacted"


def test_a_redirect_to_a_link_local_address_is_refused(ytdlp, media):
    with pytest.raises(MediaError) as caught:
        ytdlp.resolve(media.redirect_url("http://169.254.169.254/latest/meta-data/"), max_items=10)
    assert caught.value.code == "forbidden_address" and "169.254.169.254" in caught.value.message


def test_resolve_a_single_video_and_an_rss_playlist(ytdlp, media):
    single = ytdlp.resolve(media.url("clip1.mp4"), max_items=10)
    assert single.kind == "video" and len(single.entries) == 1 and not single.truncated
    feed = ytdlp.resolve(media.feed_url("clip1.mp4,clip2.mp4,clip3.mp4"), max_items=10)
    assert feed.kind == "playlist" and feed.title == "Test feed"
    assert [e.index for e in feed.entries] == [1, 2, 3]
    capped = ytdlp.resolve(media.feed_url("clip1.mp4,clip2.mp4,clip3.mp4"), max_items=2)
    assert len(capped.entries) == 2 and capped.truncated


@pytest.mark.parametrize(
    ("make_url", "code"),
    [
        (lambda m: m.base + "/missing.mp4", "http_404"),
        (lambda m: m.base + "/page.html", "unsupported_url"),
        (lambda m: f"http://127.0.0.1:{free_port()}/x.mp4", "network"),
    ],
)
def test_resolve_errors_have_codes(ytdlp, media, make_url, code):
    with pytest.raises(MediaError) as caught:
        ytdlp.resolve(make_url(media), max_items=10)
    assert caught.value.code == code and caught.value.message


def test_download_calls_the_hook_and_reuses_instances(ytdlp, media, tmp_path):
    calls = []
    first = ytdlp.download(
        media.url("long.mp4", rate=400_000),
        directory=tmp_path,
        stem="0001",
        format=None,
        hook=calls.append,
        options=as_served(),
    )
    assert first.path.parent == tmp_path and first.path.name.startswith("0001-")
    assert first.size == (media.root / "long.mp4").stat().st_size == first.path.stat().st_size
    assert calls[-1]["status"] == "finished"
    assert len([c for c in calls if c["status"] == "downloading"]) >= 2
    second_calls = []
    second = ytdlp.download(
        media.url("clip2.mp4"), directory=tmp_path, stem="0002", format=None, hook=second_calls.append
    )
    assert (
        second.path.name.startswith("0002-") and second_calls and not set(map(id, second_calls)) & set(map(id, calls))
    )
    assert ytdlp._created <= 2


def test_a_bad_format_selector_is_a_clear_failure(ytdlp, media, tmp_path):
    with pytest.raises(MediaError) as caught:
        ytdlp.download(
            media.url("clip1.mp4"), directory=tmp_path, stem="0001", format="best[height<<<3]", hook=lambda d: None
        )
    assert caught.value.code in ("bad_format", "format_unavailable")


async def test_ffmpeg_extraction_reports_progress_and_decodes(media, tmp_path):
    source = media.root / "long.mp4"
    target = audio_path(tmp_path / "long.mp4", "mp3")
    reports = []
    size = await extract_audio(source, target, "mp3", duration=None, on_progress=lambda p, t: reports.append(p))
    assert size == target.stat().st_size > 0
    assert reports and reports[-1] == 100.0 and reports == sorted(reports)
    check = subprocess.run([FFMPEG, "-v", "error", "-i", str(target), "-f", "null", "-"], capture_output=True)
    assert check.returncode == 0


async def test_ffmpeg_failure_on_a_broken_file(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video")
    with pytest.raises(MediaError) as caught:
        await extract_audio(broken, tmp_path / "broken.mp3", "mp3", duration=None, on_progress=lambda p, t: None)
    assert caught.value.code in ("ffmpeg_error", "no_audio")
    assert not (tmp_path / "broken.mp3").exists() and not list(tmp_path.glob("broken.mp3*part"))


def test_a_resolved_single_video_is_downloaded_without_extracting_it_again(media, tmp_path):
    now = [0.0]
    ytdlp = YtDlp(size=1, policy=LOOPBACK_ONLY, clock=lambda: now[0])
    name = media.fresh("clip1.mp4")
    url = media.url(name)
    resolved = ytdlp.resolve(url, max_items=10)
    before = len(media.requests)
    done = ytdlp.download(
        resolved.entries[0].url, directory=tmp_path, stem="0001", format=None, hook=lambda d: None, options=as_served()
    )
    assert done.size == (media.root / name).stat().st_size
    assert ytdlp.probes_reused == 1
    # Only the download's own request: the resolve's probe served instead of a second extraction.
    assert len(media.requests) - before == 1, media.requests[before:]

    # A probe older than the TTL is not trusted: the URL is extracted again.
    ytdlp.resolve(url, max_items=10)
    now[0] += 61.0
    before = len(media.requests)
    ytdlp.download(url, directory=tmp_path / "again", stem="0001", format=None, hook=lambda d: None)
    assert ytdlp.probes_reused == 1
    assert len(media.requests) - before >= 2


def test_a_paced_sites_requests_are_spaced_and_another_sites_are_not(media):
    # TUBEFLOW_SITE_PACING's requests:…: yt-dlp sleeps between its requests to the site (its first request in an
    # instance's life excepted, as yt-dlp does); the same server under another name is not paced.
    import time

    engine = YtDlp(size=1, policy=AddressPolicy(allow_private=True), request_sleeps={"127.0.0.1": 0.8})
    page = "/streams/pages/html5.html"
    engine.resolve(media.base.replace("127.0.0.1", "localhost") + page, max_items=5)  # the instance's first request
    took = []
    for base in (media.base, media.base.replace("127.0.0.1", "localhost")):
        began = time.monotonic()
        engine.resolve(base + page, max_items=5)
        took.append(time.monotonic() - began)
    assert took[0] >= 0.8 and took[1] < 0.8, took
