"""Post-processing with a real bar, end to end: a merge that takes seconds reports its progress over SSE and in the
events; a cancel mid-merge ends its ffmpeg within a second and leaves no output; a downloader killed mid-merge hands
the item to another, which merges again from the streams on disk without fetching them again."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_crash import cluster  # noqa: F401 - the fixture
from tests.e2e.test_e2e import decodes_as_audio, follow, submit, wait_finished
from tests.service.test_slots import _ffmpeg_writing_in

pytestmark = pytest.mark.e2e


def _segments_fetched(media, directory: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in media.requests:
        if f"/{directory}/" in path and path.endswith(".m4s"):
            counts[path] = counts.get(path, 0) + 1
    return counts


async def test_a_merge_reports_progress_over_sse_and_every_bar_only_moves_forward(stack, media, long_merge):
    url = media.fresh_stream(long_merge, "manifest.mpd")
    job = submit(stack, url=url, mode="video")
    messages = await follow(stack, job["id"], timeout=180)
    jobs = [m.json() for m in messages if m.event == "job"]
    items = [m.json() for m in messages if m.event == "item"]
    assert jobs[-1]["status"] == "completed", jobs[-1]

    merging = [i["postprocess"] for i in items if i["postprocess"]["name"] == "Merger" and i["status"] == "processing"]
    percents = [p["percent"] for p in merging if p["percent"] is not None]
    assert len(set(percents)) >= 3 and percents == sorted(percents), percents
    assert {p["label"] for p in merging} == {"merging video and audio"}
    assert all(p["total_seconds"] == pytest.approx(3 * 3600, abs=2) for p in merging if p["total_seconds"])
    # The job's bar moves while ffmpeg merges (it used to wait at 90 % of the download step) and never goes back.
    job_percents = [j["progress"]["percent"] for j in jobs]
    assert job_percents == sorted(job_percents) and job_percents[-1] == 100.0
    during = {j["progress"]["percent"] for j in jobs if 90.0 <= j["progress"]["percent"] < 100.0}
    assert len(during) >= 3, job_percents
    overall = [i["postprocess"]["overall"] for i in items]
    assert overall == sorted(overall)

    events = httpx.get(f"{stack.base}/api/jobs/{job['id']}/events", timeout=10).json()
    kinds = [e["type"] for e in events]
    merge_started = next(n for n, e in enumerate(events) if e["type"] == "postprocess.started")
    merge_done = kinds.index("postprocess.completed")
    seconds = [
        e["data"]["seconds"]
        for e in events[merge_started:merge_done]
        if e["type"] == "postprocess.progress" and e["data"]["name"] == "Merger"
    ]
    assert len(set(seconds)) >= 3 and seconds == sorted(set(seconds)), seconds
    (item,) = wait_finished(stack, job["id"])["items"]
    assert item["postprocess"]["status"] == "completed" and item["postprocess"]["completed"] >= 1


def test_a_cancel_mid_merge_ends_ffmpeg_within_a_second_and_leaves_no_output(stack, media, long_merge):
    url = media.fresh_stream(long_merge, "manifest.mpd")
    job = submit(stack, url=url, mode="video", metadata=False)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        items = httpx.get(f"{stack.base}/api/jobs/{job['id']}", timeout=10).json()["items"]
        item = items[0] if items else None
        if item and item["postprocess"]["name"] == "Merger" and (item["postprocess"]["percent"] or 0) > 5:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the merge never reported progress")
    folder = stack.media_dir / job["id"]
    assert _ffmpeg_writing_in(folder), "no ffmpeg merging"
    response = httpx.post(f"{stack.base}/api/jobs/{job['id']}/cancel", timeout=10)
    asked = time.monotonic()
    assert response.status_code == 202, response.text
    while _ffmpeg_writing_in(folder) and time.monotonic() - asked < 5:
        time.sleep(0.02)
    gone = time.monotonic() - asked
    assert gone < 1.0, f"ffmpeg still merging {gone:.2f} s after the cancel"
    view = wait_finished(stack, job["id"], timeout=30)
    assert view["status"] == "cancelled" and view["items"][0]["status"] in ("failed", "skipped", "cancelled", "queued")
    left = sorted(p.name for p in folder.iterdir())
    assert not [name for name in left if ".temp." in name or not Path(name).stem.split(".")[-1].startswith("f")], left


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
def test_a_downloader_gone_mid_merge_hands_the_item_over_and_the_streams_are_not_fetched_again(
    cluster,  # noqa: F811 - the fixture
    media,
    long_merge,
    stop,
):
    dl_a = cluster.start("dl-a", "downloader", TUBEFLOW_WORKER_NAME="dl-a")
    for service in ("progress", "api"):
        cluster.start(service, service)
    cluster.wait_ready()
    url = media.fresh_stream(long_merge, "manifest.mpd")
    directory = url.rsplit("/", 2)[-2]
    job = httpx.post(f"{cluster.base}/api/jobs", json={"url": url, "mode": "video"}).json()
    cluster.wait(
        job["id"],
        lambda v: (
            v["items"]
            and v["items"][0]["postprocess"]["name"] == "Merger"
            and (v["items"][0]["postprocess"]["percent"] or 0) > 5
        ),
        timeout=120,
    )
    fetched = _segments_fetched(media, directory)
    assert fetched and set(fetched.values()) == {1}, fetched
    dl_a.send_signal(stop)
    dl_a.wait(30)
    folder = Path(cluster.env["TUBEFLOW_DATA_DIR"]) / "media" / job["id"]
    deadline = time.monotonic() + 5
    while _ffmpeg_writing_in(folder) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _ffmpeg_writing_in(folder), "the gone downloader's ffmpeg goes on merging"
    cluster.start("dl-b", "downloader", TUBEFLOW_WORKER_NAME="dl-b")
    view = cluster.wait(job["id"], lambda v: v["status"] not in ("queued", "resolving", "running"), timeout=180)
    assert view["status"] == "completed", view
    assert _segments_fetched(media, directory) == fetched  # merged again from the streams on disk
    events = httpx.get(f"{cluster.base}/api/jobs/{job['id']}/events").json()
    merges = [
        e["data"]["worker"] for e in events if e["type"] == "postprocess.started" and e["data"]["name"] == "Merger"
    ]
    assert merges == ["dl-a", "dl-b"], merges
    assert [e["data"]["worker"] for e in events if e["type"] == "download.completed"] == ["dl-b"]


@pytest.mark.parametrize("source", ["dash", "direct-mp4"])
def test_an_audio_job_keeps_only_the_audio_and_fetches_only_the_audio_stream(stack, media, source):
    url = media.fresh_stream("dash", "manifest.mpd") if source == "dash" else media.url(media.fresh("clip3.mp4"))
    job = submit(stack, url=url, mode="audio", audio_format="mp3")
    view = wait_finished(stack, job["id"], timeout=90)
    assert view["status"] == "completed", view
    (item,) = view["items"]
    assert item["download"]["file"] is None and item["extract"]["file"].endswith(".mp3")
    assert sorted(p.name for p in (stack.media_dir / job["id"]).iterdir()) == [Path(item["extract"]["file"]).name]
    assert decodes_as_audio(stack.media_dir / item["extract"]["file"])
    if source == "dash":
        # The best audio stream alone: no video segment was fetched (stream0 is the video adaptation set).
        directory = url.rsplit("/", 2)[-2]
        fetched = [p for p in media.requests if f"/{directory}/" in p and p.endswith(".m4s")]
        assert fetched and all("stream1" in p for p in fetched), fetched
        assert item["download"]["chosen"].get("height") is None and item["download"]["chosen"]["acodec"]
