"""Reliability and safety through `tubeflow up` on real NATS, yt-dlp and ffmpeg: retries, cancel, SSRF at fetch
time, idempotent submission, poison events."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import nats
import pytest

from services.runtime.nats import DLQ_STREAM, STREAM
from tests.e2e.test_e2e import follow, submit, wait_finished

pytestmark = pytest.mark.e2e


def events_of(stack, job_id: str) -> list[dict]:
    return httpx.get(f"{stack.base}/api/jobs/{job_id}/events").json()


def test_transient_errors_are_retried_and_every_attempt_shows(stack, media):
    job = submit(stack, url=media.feed_url("flaky2-clip1.mp4,clip2.mp4"), mode="video")
    view = wait_finished(stack, job["id"])
    assert view["status"] == "completed", view
    flaky, steady = view["items"]
    assert flaky["attempts"] == 3 and steady["attempts"] == 1
    retries = [e for e in events_of(stack, job["id"]) if e["type"] == "download.retrying"]
    assert [(e["item_id"], e["data"]["attempt"], e["data"]["code"]) for e in retries] == [
        ("0001", 1, "http_503"),
        ("0001", 2, "http_503"),
    ]


def test_a_permanently_failing_item_does_not_stall_the_others(stack, media):
    job = submit(stack, url=media.feed_url("flaky9-clip1.mp4,clip2.mp4,clip3.mp4"), mode="audio")
    view = wait_finished(stack, job["id"])
    assert view["status"] == "partial"
    assert [i["status"] for i in view["items"]] == ["failed", "completed", "completed"]
    assert view["items"][0]["error"]["code"] == "http_503" and view["items"][0]["attempts"] == 3
    assert view["download"]["failed"] == 1 and view["extract"]["skipped"] == 1 and view["extract"]["remaining"] == 0


def test_redirects_to_link_local_addresses_are_refused_at_fetch_time(stack, media):
    metadata = "http://169.254.169.254/latest/meta-data/"
    direct = wait_finished(stack, submit(stack, url=media.redirect_url(metadata))["id"])
    assert direct["status"] == "failed" and direct["error"]["code"] == "forbidden_address"
    # As a playlist entry: that item fails, the rest of the playlist goes on.
    job = submit(stack, url=media.feed_url("clip1.mp4," + media.redirect_url(metadata)))
    view = wait_finished(stack, job["id"])
    assert view["status"] == "partial"
    assert [i["status"] for i in view["items"]] == ["completed", "failed"]
    assert view["items"][1]["error"]["code"] == "forbidden_address"
    assert httpx.post(f"{stack.base}/api/jobs", json={"url": metadata}).json()["errors"][0]["code"] == (
        "forbidden_address"
    )


async def test_cancel_stops_running_work_and_skips_the_queue(stack, media):
    names = [media.fresh("long.mp4") for _ in range(6)]
    slow = ",".join(f"{name}@{40_000 + 1000 * i}" for i, name in enumerate(names))
    job = submit(stack, url=media.feed_url(slow), mode="both")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        view = httpx.get(f"{stack.base}/api/jobs/{job['id']}").json()
        if any(i["download"]["downloaded_bytes"] > 0 for i in view["items"]):
            break
        await asyncio.sleep(0.05)
    stream = asyncio.create_task(follow(stack, job["id"]))
    response = httpx.post(f"{stack.base}/api/jobs/{job['id']}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    messages = await asyncio.wait_for(stream, 10)
    assert messages[-1].event == "job" and messages[-1].json()["status"] == "cancelled"

    def fetches_of_this_job() -> int:
        # Other tests' jobs share the media server: count only this playlist's files.
        return sum(1 for path in list(media.requests) if any(name in path for name in names))

    requests_at_cancel = fetches_of_this_job()
    await asyncio.sleep(2.5)
    job_dir = stack.media_dir / job["id"]
    leftovers = [p.name for p in job_dir.glob("*")] if job_dir.exists() else []
    assert not [n for n in leftovers if n.endswith(".part")], leftovers
    assert fetches_of_this_job() == requests_at_cancel, "something was fetched after the cancel settled"
    view = httpx.get(f"{stack.base}/api/jobs/{job['id']}").json()
    assert view["status"] == "cancelled" and view["error"]["code"] == "cancelled"
    assert view["progress"]["percent"] < 100
    assert all(i["status"] in ("skipped", "completed") for i in view["items"])
    again = httpx.post(f"{stack.base}/api/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and again.json()["errors"][0]["code"] == "already_finished"
    assert httpx.post(f"{stack.base}/api/jobs/01m80kr9ngrx981wzxbmtbw7d3/cancel").status_code == 404


def test_the_same_idempotency_key_gives_the_same_job(stack, media):
    body = {"url": media.url("clip3.mp4"), "mode": "video"}
    first = httpx.post(f"{stack.base}/api/jobs", json=body, headers={"Idempotency-Key": "order-42"})
    second = httpx.post(f"{stack.base}/api/jobs", json=body, headers={"Idempotency-Key": "order-42"})
    other = httpx.post(f"{stack.base}/api/jobs", json=body, headers={"Idempotency-Key": "order-43"})
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"] != other.json()["id"]
    wait_finished(stack, first.json()["id"])
    requested = [e for e in events_of(stack, first.json()["id"]) if e["type"] == "requested"]
    assert len(requested) == 1


async def test_poison_goes_to_the_dead_letter_stream_and_reads_stay_healthy(stack, media):
    job = submit(stack, url=media.url("clip1.mp4"))
    wait_finished(stack, job["id"])
    nc = await nats.connect(stack.nats_url)
    try:
        js = nc.jetstream()
        await js.publish(
            f"tubeflow.job.{job['id']}.item.queued", b"{not an event", stream=STREAM, headers={"X-Origin": "fuzz"}
        )
        deadline = time.monotonic() + 20
        letters = []
        sub = await js.subscribe("tubeflow.dlq.>", stream=DLQ_STREAM, ordered_consumer=True)
        while time.monotonic() < deadline and not letters:
            try:
                msg = await sub.next_msg(timeout=1)
            except nats.errors.TimeoutError:
                continue
            if msg.data == b"{not an event":
                letters.append(msg)
        assert letters, "the poison message never reached the dead-letter stream"
        headers = letters[0].headers
        assert headers["X-Origin"] == "fuzz" and "invalid event" in headers["Tubeflow-Dlq-Reason"]
        assert headers["Tubeflow-Dlq-Consumer"] == "downloader-items-v1"
    finally:
        await nc.close()
    assert httpx.get(f"{stack.base}/api/jobs/{job['id']}").status_code == 200
    records = events_of(stack, job["id"])
    assert records[-1]["type"] == "invalid" and "not JSON" in json.dumps(records[-1]["data"])
    # The pipeline still works after the poison.
    assert wait_finished(stack, submit(stack, url=media.url("clip2.mp4"))["id"])["status"] == "completed"


def test_verify_notices_a_tampered_view_and_rebuild_restores_the_fold(stack, media):
    import subprocess
    import sys

    from tests.conftest import ROOT

    def tubeflow(command: str) -> subprocess.CompletedProcess:
        env = {**__import__("os").environ, "TUBEFLOW_NATS_URL": stack.nats_url}
        return subprocess.run(
            [sys.executable, "-m", "services.cli", command],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    job = submit(stack, url=media.url("clip1.mp4"))
    original = wait_finished(stack, job["id"])
    for _ in range(150):  # other tests' jobs may still run (e.g. one left running on purpose): wait for quiet
        if tubeflow("verify").returncode == 0:
            break
        time.sleep(0.2)
    first_check = tubeflow("verify")
    assert first_check.returncode == 0, first_check.stdout

    async def tamper() -> None:
        nc = await nats.connect(stack.nats_url)
        kv = await nc.jetstream().key_value("tubeflow_jobs")
        await kv.put(job["id"], json.dumps({**original, "title": "tampered"}).encode())
        await nc.close()

    asyncio.run(tamper())
    checked = tubeflow("verify")
    assert checked.returncode == 1 and job["id"] in checked.stdout
    rebuilt = tubeflow("rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert tubeflow("verify").returncode == 0
    assert httpx.get(f"{stack.base}/api/jobs/{job['id']}").json() == original


def test_retry_runs_the_failed_items_again_and_the_job_ends_anew(stack, media):
    job = submit(stack, url=media.feed_url("flaky3-clip1.mp4,clip2.mp4"), mode="audio")
    first = wait_finished(stack, job["id"])
    assert first["status"] == "partial" and first["items"][0]["error"]["code"] == "http_503"
    assert httpx.post(f"{stack.base}/api/jobs/{job['id']}/retry").status_code == 202
    view = wait_finished(stack, job["id"])
    assert view["status"] == "completed", view
    assert view["retries"] == 1 and view["items"][0]["extract"]["status"] == "completed"
    assert view["items"][1]["extract"]["file"] == first["items"][1]["extract"]["file"]  # untouched
    again = httpx.post(f"{stack.base}/api/jobs/{job['id']}/retry")
    assert again.status_code == 409 and again.json()["errors"][0]["code"] == "nothing_to_retry"


def test_retry_of_a_job_that_never_resolved_starts_it_over(stack, media):
    import shutil

    name = f"late-{time.monotonic_ns()}.mp4"
    job = submit(stack, url=media.url(name))
    assert wait_finished(stack, job["id"])["error"]["code"] == "http_404"
    shutil.copy(media.root / "clip1.mp4", media.root / name)
    try:
        response = httpx.post(f"{stack.base}/api/jobs/{job['id']}/retry")
        assert response.status_code == 202 and response.json()["status"] == "queued"
        view = wait_finished(stack, job["id"])
        assert view["status"] == "completed" and view["error"] is None and view["progress"]["percent"] == 100
    finally:
        (media.root / name).unlink()


def test_playlist_items_picks_entries(stack, media):
    job = submit(stack, url=media.feed_url("clip1.mp4,clip2.mp4,clip3.mp4"), playlist_items="2-3")
    view = wait_finished(stack, job["id"])
    assert view["status"] == "completed" and view["playlist_items"] == "2-3"
    assert [i["title"] for i in view["items"]] == ["clip2.mp4", "clip3.mp4"]


def test_media_already_downloaded_is_reused_and_concurrent_jobs_download_once(stack, media):
    import shutil

    name = f"shared-{time.monotonic_ns()}.mp4"
    shutil.copy(media.root / "long.mp4", media.root / name)
    size = (media.root / name).stat().st_size
    url = media.url(name, rate=100_000)
    try:
        both = [submit(stack, url=url, mode="both") for _ in range(2)]
        views = [wait_finished(stack, j["id"]) for j in both]
        assert [v["status"] for v in views] == ["completed", "completed"]
        reused = sorted(v["items"][0]["download"]["reused"] for v in views)
        assert reused == [False, True], "two concurrent jobs for one media downloaded it twice"
        # One file, a name for it in each job's folder (hard links: deleting one job keeps the other's).
        files = [stack.media_dir / v["items"][0]["download"]["file"] for v in views]
        assert files[0] != files[1] and files[0].samefile(files[1])
        assert all(v["items"][0]["download"]["file"].startswith(v["id"] + "/") for v in views)
        sent_after_two = media.sent[name]
        assert sent_after_two < 1.5 * size

        later = wait_finished(stack, submit(stack, url=url, mode="both")["id"])
        item = later["items"][0]
        assert later["status"] == "completed" and item["download"]["reused"] and item["extract"]["reused"]
        audio = [stack.media_dir / v["items"][0]["extract"]["file"] for v in (later, views[0])]
        assert audio[0].samefile(audio[1])
        assert media.sent[name] - sent_after_two < size / 4, "the media was transferred again"
    finally:
        (media.root / name).unlink()
