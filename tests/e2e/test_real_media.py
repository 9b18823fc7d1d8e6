"""What real sites serve, end to end: video and audio as separate streams (DASH, HLS with an audio group) merged by
ffmpeg, muxed HLS segments, and a page that embeds a manifest. One bar per item over all of its streams, never
going back; the merge seen as a `processing` step; the merged file holds video and audio; the mp3 decodes."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest

from tests.e2e.test_e2e import decodes_as_audio, follow, submit, wait_finished
from tests.support.media import FFMPEG

pytestmark = pytest.mark.e2e

SHAPES = {
    # name: (directory, manifest, embedded in a page, streams yt-dlp downloads)
    "dash": ("dash", "manifest.mpd", False, 2),
    "hls-audio-group": ("hls", "master.m3u8", False, 2),
    "hls-muxed": ("hlsmux", "index.m3u8", False, 1),
    "page-embedding-dash": ("dash", "manifest.mpd", True, 2),
}


def streams_in(path) -> str:
    probe = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    return probe.stderr


@pytest.mark.parametrize("shape", SHAPES)
async def test_split_and_fragmented_media_give_one_honest_bar_per_item(stack, media, shape):
    directory, manifest, embedded, streams = SHAPES[shape]
    url = (
        media.embed_url(directory, manifest)
        if embedded
        else media.stream_url(directory, manifest, segment_delay_ms=120)
    )
    job = submit(stack, url=url, mode="both", audio_format="mp3")
    messages = await follow(stack, job["id"], timeout=120)

    jobs = [m.json() for m in messages if m.event == "job"]
    items = [m.json() for m in messages if m.event == "item"]
    final = jobs[-1]
    assert final["status"] == "completed", final
    # The job's bar and every item's bar only go forward, and reach 100 only at the end of their work.
    percents = [j["progress"]["percent"] for j in jobs]
    assert percents == sorted(percents) and percents[-1] == 100.0
    assert all(p < 100 for p in percents[:-1])
    bars = [i["download"]["percent"] for i in items]
    assert bars == sorted(bars), bars
    for item in items:
        download = item["download"]
        if download["percent"] == 100.0 and download["status"] == "running":
            assert download["stream_index"] in (None, download["stream_count"]), download
    if streams > 1:
        running = [i["download"] for i in items if i["download"]["status"] == "running"]
        assert {d["stream_count"] for d in running} >= {streams}, running
        assert {d["stream_kind"] for d in running} >= {"video", "audio"}, running
        # The merge is a step the stream shows, not a bar stuck at 100.
        assert any(i["status"] == "processing" and i["postprocess"]["name"] == "Merger" for i in items), items
    (item,) = final_items = [i for i in items if i["status"] == "completed"][-1:]
    assert final_items and item["postprocess"]["status"] in ("none", "completed")
    merged = stack.media_dir / item["download"]["file"]
    described = streams_in(merged)
    assert "Video:" in described and "Audio:" in described, described
    assert decodes_as_audio(stack.media_dir / item["extract"]["file"])


def test_a_manifest_with_a_missing_segment_fails_the_item_with_a_code_and_a_retry_resumes(stack, media):
    url = media.fresh_stream("dash", "manifest.mpd")
    copy = url.rsplit("/", 2)[-2]
    third = sorted((media.root / copy).glob("chunk-stream0-*.m4s"))[2]  # the third video segment
    kept = third.read_bytes()
    third.unlink()
    job = submit(stack, url=url, mode="video")
    view = wait_finished(stack, job["id"], timeout=60)
    assert view["status"] == "failed"
    (item,) = view["items"]
    assert item["error"]["code"] == "fragment_missing", item["error"]
    # The retries before giving up are said, not silent.
    assert "fragment" in item["error"]["message"] and "Giving up after 2 retries" in item["error"]["message"]
    # The segment appears after all; a retry fetches what is missing and the job completes.
    third.write_bytes(kept)
    fetched_before = sum(1 for path in media.requests if f"/{copy}/chunk-stream0-" in path)
    assert httpx.post(f"{stack.base}/api/jobs/{job['id']}/retry", timeout=10).status_code == 202
    view = wait_finished(stack, job["id"], timeout=60)
    assert view["status"] == "completed", view["items"][0]["error"]
    refetched = sum(1 for path in media.requests if f"/{copy}/chunk-stream0-" in path) - fetched_before
    total = len(list((media.root / copy).glob("chunk-stream0-*.m4s")))
    assert refetched <= total - 2, f"the retry fetched {refetched} of {total} video segments; two were on disk"


def test_fragments_that_fail_once_are_retried_and_the_retries_are_reported(stack, media):
    job = submit(stack, url=media.stream_url("hlsmux", "index.m3u8", segment_failures=1), mode="video")
    view = wait_finished(stack, job["id"], timeout=60)
    assert view["status"] == "completed", view
    assert view["items"][0]["download"]["fragment_retries"] >= 1


def test_a_live_stream_records_without_a_percent_and_a_cancel_keeps_a_playable_file(stack, media):
    """A live stream (an HLS playlist with no end) is recorded: the item shows bytes and seconds, no made-up
    percent, and the stage `recording`; a cancel stops the recording and keeps what it has as a finished file."""
    job = submit(stack, url=media.live_url("hlsmux"), mode="both")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        view = httpx.get(f"{stack.base}/api/jobs/{job['id']}", timeout=10).json()
        items = view["items"]
        if items and items[0]["status"] == "recording" and items[0]["download"]["downloaded_bytes"] > 0:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the live stream was not recorded: {view}")
    (item,) = items
    assert item["download"]["percent"] is None and item["download"]["recorded_seconds"] > 0
    assert view["progress"]["stage"] == "recording" and view["status"] == "running"
    cancelled = httpx.post(f"{stack.base}/api/jobs/{job['id']}/cancel", timeout=10)
    assert cancelled.status_code == 202
    view = wait_finished(stack, job["id"], timeout=30)
    assert view["status"] == "completed", [(i["status"], i["error"], i["download"]) for i in view["items"]]
    (item,) = view["items"]
    assert item["status"] == "completed" and item["download"]["stopped_early"] is True
    assert item["extract"]["status"] == "skipped"  # what was recorded is kept as it is
    recorded = stack.media_dir / item["download"]["file"]
    assert recorded.stat().st_size == item["download"]["size"] > 0
    assert "Video:" in streams_in(recorded)
    decoded = subprocess.run([FFMPEG, "-v", "error", "-i", str(recorded), "-f", "null", "-"], capture_output=True)
    assert decoded.returncode == 0, decoded.stderr


def test_a_merge_that_fails_names_the_step_and_keeps_the_streams(stack, media):
    url = media.fresh_stream("dash", "manifest.mpd")
    copy = media.root / url.rsplit("/", 2)[-2]
    for audio in [copy / "init-stream1.m4s", *copy.glob("chunk-stream1-*.m4s")]:
        audio.write_bytes(bytes(range(256)) * (audio.stat().st_size // 256 + 1))  # not audio any more
    job = submit(stack, url=url, mode="video")
    view = wait_finished(stack, job["id"], timeout=60)
    assert view["status"] == "failed"
    (item,) = view["items"]
    assert item["error"]["code"] == "merge_failed", item["error"]
    postprocess = item["postprocess"]
    assert (postprocess["status"], postprocess["name"], postprocess["completed"]) == ("failed", "Merger", 0)
    assert postprocess["label"] == "merging video and audio"
    events = httpx.get(f"{stack.base}/api/jobs/{job['id']}/events", timeout=10).json()
    failed = [e for e in events if e["type"] == "postprocess.failed"]
    assert len(failed) == 1 and failed[0]["data"]["name"] == "Merger" and failed[0]["data"]["code"] == "merge_failed"
    # The downloaded streams stay on disk for a retry.
    kept = sorted(p.suffix for p in (stack.media_dir / job["id"]).iterdir())
    assert ".m4a" in kept and ".mp4" in kept, kept
