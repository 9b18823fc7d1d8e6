"""End to end through `tubeflow up`: real NATS, real yt-dlp downloading from the local media server, real ffmpeg."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from tests.support.media import FFMPEG
from tests.support.sse import sse_events

pytestmark = pytest.mark.e2e


def submit(stack, **body) -> dict:
    response = httpx.post(f"{stack.base}/api/jobs", json=body, timeout=10)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/api/jobs/{response.json()['id']}"
    return response.json()


def wait_finished(stack, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = httpx.get(f"{stack.base}/api/jobs/{job_id}", timeout=10).json()
        if view["status"] in ("completed", "partial", "failed", "cancelled"):
            return view
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {view}")


async def follow(stack, job_id: str, headers: dict | None = None, timeout: float = 60) -> list:
    messages = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout)) as client:
        async with client.stream("GET", f"{stack.base}/api/jobs/{job_id}/stream", headers=headers or {}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            async for message in sse_events(response):
                messages.append(message)
    return messages


def decodes_as_audio(path) -> bool:
    result = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True)
    probe = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    return result.returncode == 0 and "Audio:" in probe.stderr and "Video:" not in probe.stderr


async def test_both_mode_job_streams_bytes_extraction_and_completion(stack, media):
    job = submit(
        stack,
        url=media.url(media.fresh("podcast.mp4"), rate=600_000),
        mode="both",
        audio_format="mp3",
        metadata=False,  # the file as served, byte for byte
    )
    messages = await follow(stack, job["id"])

    ids = [int(m.id) for m in messages]
    assert all(i is not None for i in ids) and ids == sorted(ids) and len(set(ids)) == len(ids)
    items = [m.json() for m in messages if m.event == "item"]
    jobs = [m.json() for m in messages if m.event == "job"]
    downloading = [i for i in items if i["download"]["status"] == "running" and 0 < i["download"]["percent"] < 100]
    assert downloading, "no intermediate byte progress reached the SSE client"
    assert any(i["download"]["downloaded_bytes"] > 0 and i["download"]["total_bytes"] for i in downloading)
    assert any(i["extract"]["status"] == "running" for i in items), "extraction was invisible"
    percents = [j["progress"]["percent"] for j in jobs]
    assert percents == sorted(percents), "job percent went backwards"
    assert all(p < 100 for p in percents[:-1]), [(m.id, m.data[:300]) for m in messages if m.event == "job"][-3:]
    final = jobs[-1]
    assert final["status"] == "completed" and final["progress"]["percent"] == 100
    assert "items" not in final

    view = httpx.get(f"{stack.base}/api/jobs/{job['id']}").json()
    item = view["items"][0]
    assert item["status"] == "completed"
    video = stack.media_dir / item["download"]["file"]
    audio = stack.media_dir / item["extract"]["file"]
    assert video.stat().st_size == (media.root / "podcast.mp4").stat().st_size and not item["download"]["reused"]
    assert audio.suffix == ".mp3" and decodes_as_audio(audio)
    assert item["worker"] and ":" in item["worker"]

    # The produced file is served, with ranges.
    whole = httpx.get(f"{stack.base}/media/{item['extract']['file']}")
    assert whole.status_code == 200 and whole.content == audio.read_bytes()
    part = httpx.get(f"{stack.base}/media/{item['extract']['file']}", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == audio.read_bytes()[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{audio.stat().st_size}"


async def test_sse_resume_with_last_event_id_skips_what_was_seen(stack, media):
    job = submit(stack, url=media.url("clip1.mp4"), mode="video")
    wait_finished(stack, job["id"])
    everything = await follow(stack, job["id"])
    assert [m.event for m in everything].count("job") == 1  # a snapshot of a finished job, then the stream closes
    assert everything[-1].event == "job" and everything[-1].json()["status"] == "completed"
    item_message = next(m for m in everything if m.event == "item")
    rest = await follow(stack, job["id"], headers={"Last-Event-ID": str(item_message.id)})
    assert [m.event for m in rest] == ["job"]
    assert int(rest[0].id) > int(item_message.id)
    nothing = await follow(stack, job["id"], headers={"Last-Event-ID": str(everything[-1].id)})
    assert nothing == []


async def test_rss_playlist_completes_every_item(stack, media):
    job = submit(stack, url=media.feed_url("clip1.mp4,clip2.mp4,clip3.mp4"), mode="audio", audio_format="opus")
    view = wait_finished(stack, job["id"])
    assert view["status"] == "completed", view
    assert view["kind"] == "playlist" and view["title"] == "Test feed"
    assert view["download"] == {**view["download"], "total": 3, "completed": 3, "remaining": 0, "failed": 0}
    assert view["extract"]["total"] == 3 and view["extract"]["completed"] == 3 and view["extract"]["remaining"] == 0
    assert [i["index"] for i in view["items"]] == [1, 2, 3]
    for item in view["items"]:
        assert item["extract"]["file"].endswith(".opus")
        assert decodes_as_audio(stack.media_dir / item["extract"]["file"])


@pytest.mark.parametrize(
    ("path", "code"),
    # An endless page stops at the page bound (issue 23: it was read for as long as the resolve deadline allowed).
    [("/missing.mp4", "http_404"), ("/page.html", "unsupported_url"), ("/endless.html", "page_too_large")],
)
def test_unusable_urls_end_as_failed_jobs_with_codes(stack, media, path, code):
    job = submit(stack, url=media.base + path)
    view = wait_finished(stack, job["id"])
    assert view["status"] == "failed"
    assert view["error"]["code"] == code
    assert view["error"]["message"]
    assert view["progress"]["percent"] == 100


def test_refused_connection_is_a_network_failure(stack):
    from tests.conftest import free_port

    job = submit(stack, url=f"http://127.0.0.1:{free_port()}/gone.mp4")
    view = wait_finished(stack, job["id"])
    assert view["status"] == "failed" and view["error"]["code"] == "network"


def test_events_endpoint_and_replay_agree_with_the_view(stack, media):
    job = submit(stack, url=media.url("clip2.mp4"), mode="audio", audio_format="m4a")
    view = wait_finished(stack, job["id"])
    events = httpx.get(f"{stack.base}/api/jobs/{job['id']}/events").json()
    types = [e["type"] for e in events]
    assert types[0] == "requested" and "download.completed" in types and types[-1] == "extract.completed"
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and seqs[-1] == view["seq"]
    page = httpx.get(f"{stack.base}/api/jobs/{job['id']}/events", params={"after": seqs[2]}).json()
    assert [e["seq"] for e in page] == seqs[3:]

    def replay(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "services.cli", "replay", job["id"], *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    for source in (["--api", stack.base], ["--nats", stack.nats_url]):
        result = replay(*source, "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == view

    timeline = replay("--api", stack.base)
    assert timeline.returncode == 0
    assert len(timeline.stdout.splitlines()) == len(events) + 1
    assert "download.completed" in timeline.stdout

    early = json.loads(replay("--api", stack.base, "--until-seq", str(seqs[1]), "--json").stdout)
    assert early["seq"] == seqs[1] and early["status"] in ("queued", "resolving", "running")


def test_jobs_list_is_newest_first_with_a_cursor(stack, media):
    ids = [submit(stack, url=media.url("clip3.mp4"))["id"] for _ in range(3)]
    first = httpx.get(f"{stack.base}/api/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in first["jobs"]] == ids[::-1][:2]
    assert first["next"] == ids[1]
    second = httpx.get(f"{stack.base}/api/jobs", params={"limit": 2, "cursor": first["next"]}).json()
    assert second["jobs"][0]["id"] == ids[0]
    for job_id in ids:
        wait_finished(stack, job_id)
    done = httpx.get(f"{stack.base}/api/jobs", params={"status": "completed", "limit": 500}).json()
    assert set(ids) <= {j["id"] for j in done["jobs"]}
    assert all(j["status"] == "completed" for j in done["jobs"])


def test_health_openapi_and_page(stack):
    assert httpx.get(f"{stack.base}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{stack.base}/readyz").status_code == 200
    schema = httpx.get(f"{stack.base}/schema/openapi.json").json()
    assert {"/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/stream", "/api/jobs/{job_id}/events"} <= set(
        schema["paths"]
    )
    assert "JobView" in json.dumps(schema["components"])
    page = httpx.get(f"{stack.base}/")
    assert page.status_code == 200 and "tubeflow" in page.text
    assert httpx.get(f"{stack.base}/api/jobs/01m80kr9ngrx981wzxbmtbw7d3").status_code == 404
    assert httpx.get(f"{stack.base}/api/jobs/nope/stream").status_code == 404
    assert httpx.get(f"{stack.base}/media/../../etc/passwd").status_code == 404


async def test_idle_streams_get_heartbeats(stack, media):
    job = submit(stack, url=f"{media.base}/stall/2.5/clip1.mp4")
    comments = 0
    async with httpx.AsyncClient(timeout=httpx.Timeout(60)) as client:
        async with client.stream("GET", f"{stack.base}/api/jobs/{job['id']}/stream") as response:
            # Read as raw lines: an SSE client (EventSource, httpx-sse) drops comments before the caller sees them.
            block: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    comments += 1
                elif line:
                    name, _, value = line.partition(":")
                    block[name] = value.strip()
                elif block:
                    # A heartbeat is only a comment: every block that is an event (it has data) has an id and a type.
                    if "data" in block:
                        assert block.get("id", "").isdigit() and block.get("event") in ("job", "item") and block["data"]
                    block = {}
    assert comments >= 2  # 0.5 s heartbeats while yt-dlp waits 2.5 s for the server
    assert wait_finished(stack, job["id"])["status"] == "completed"


def test_an_item_is_extracted_while_later_items_still_download(stack, media):
    job = submit(
        stack, url=media.feed_url(f"{media.fresh('clip1.mp4')},{media.fresh('long.mp4')}@100000"), mode="audio"
    )
    view = wait_finished(stack, job["id"])
    assert view["status"] == "completed"
    events = httpx.get(f"{stack.base}/api/jobs/{job['id']}/events").json()
    seq_of = {(e["type"], e["item_id"]): e["seq"] for e in events}
    assert seq_of[("extract.completed", "0001")] < seq_of[("download.completed", "0002")]
    workers = {e["data"]["worker"] for e in events if e["type"].startswith("download.")}
    assert len(workers) == 1 and ":" in workers.pop()


async def test_the_all_jobs_stream_sends_every_change_and_resumes_after_last_event_id(stack, media):
    seen: list = []

    async def watch(headers: dict, until) -> None:  # noqa: ANN001
        async with httpx.AsyncClient(timeout=httpx.Timeout(60)) as client:
            async with client.stream("GET", f"{stack.base}/api/jobs/stream?limit=3", headers=headers) as response:
                assert response.status_code == 200 and response.headers["cache-control"] == "no-cache"
                async for message in sse_events(response):
                    seen.append(message)
                    if until(message):
                        return

    import asyncio

    mine_id: dict = {}
    task = asyncio.create_task(
        watch({}, lambda m: m.json()["status"] == "completed" and m.json()["id"] == mine_id.get("id"))
    )
    await asyncio.sleep(0.3)
    job_id = mine_id["id"] = submit(stack, url=media.url("clip2.mp4"), mode="audio")["id"]
    await asyncio.wait_for(task, 60)
    assert len([m for m in seen if m.event == "job"]) >= 3
    mine = [m for m in seen if m.json()["id"] == job_id]
    assert [m.json()["status"] for m in mine][-1] == "completed" and "items" not in mine[-1].json()
    assert [int(m.id) for m in mine] == sorted(int(m.id) for m in mine)
    # Resuming from the middle: everything after that id, nothing at or before it.
    middle = mine[len(mine) // 2]
    seen.clear()
    await asyncio.wait_for(watch({"Last-Event-ID": str(middle.id)}, lambda m: m.json()["id"] == job_id), 10)
    assert all(int(m.id) > int(middle.id) for m in seen)
    assert seen[-1].json()["status"] == "completed"
