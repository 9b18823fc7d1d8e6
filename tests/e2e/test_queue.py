"""The queue's controls against real NATS with two downloader processes: priority order across processes, pause and
resume (also stopping running downloads), hold and start, bulk actions, delete (shared files kept), per-site limits
held across processes, and retention."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from services.runtime.embedded import EmbeddedNats
from tests.conftest import free_port, spawn_cli, wait_ready
from tests.support.media import MediaServer
from tests.support.processes import stop_all, wait_for

pytestmark = pytest.mark.e2e

SLOW = 60_000  # bytes/s: a 2 s clip takes about a second


@contextmanager
def services(tmp_path: Path, extra: dict[str, str] | None = None, downloaders: int = 2) -> Iterator[dict]:
    """NATS, `downloaders` downloader processes (one slot each), the projector and an API."""
    server = EmbeddedNats(tmp_path / "nats")
    url = server.start()
    port = free_port()
    env = {
        **os.environ,
        "TUBEFLOW_NATS_URL": url,
        "TUBEFLOW_DATA_DIR": str(tmp_path / "data"),
        "TUBEFLOW_ALLOWED_NETWORKS": "127.0.0.0/8",
        "TUBEFLOW_DOWNLOAD_CONCURRENCY": "1",
        "TUBEFLOW_PROGRESS_INTERVAL": "0.1",
        **(extra or {}),
    }
    log = tmp_path / "services.log"
    processes: list[subprocess.Popen] = [
        spawn_cli("service", "downloader", env={**env, "TUBEFLOW_WORKER_NAME": f"dl-{n}"}, log=log)
        for n in range(downloaders)
    ]
    processes.append(spawn_cli("service", "progress", env=env, log=log))
    processes.append(spawn_cli("service", "api", "--port", str(port), env=env, log=log))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, explain=lambda: log.read_text()[-3000:])
        with httpx.Client(base_url=base, timeout=30) as client:
            wait_for(lambda: len(client.get("/api/queue").json()["workers"]) == downloaders, 30, "workers up")
            yield {"client": client, "log": log, "env": env, "base": base, "data": tmp_path / "data", "port": port}
    finally:
        stop_all(processes, grace=20)
        server.stop()


def open_connections(port: int) -> int:
    """Established TCP connections whose local port is ``port`` (the media server's side), from /proc."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                    count += 1
    return count


def submit(client: httpx.Client, url: str, **fields) -> dict:  # noqa: ANN003
    response = client.post("/api/jobs", json={"url": url, **fields})
    assert response.status_code == 202, response.text
    return response.json()


def job(client: httpx.Client, job_id: str) -> dict:
    return client.get(f"/api/jobs/{job_id}").json()


def finished(client: httpx.Client, ids: list[str], log: Path, timeout: float = 90) -> list[dict]:
    terminal = {"completed", "partial", "failed", "cancelled"}
    return wait_for(
        lambda: (views := [job(client, i) for i in ids]) and all(v["status"] in terminal for v in views) and views,
        timeout,
        "jobs to finish",
        lambda: log.read_text()[-3000:],
    )


def events(client: httpx.Client, job_id: str) -> list[dict]:
    return client.get(f"/api/jobs/{job_id}/events").json()


def started_seqs(client: httpx.Client, job_id: str) -> list[int]:
    return [e["seq"] for e in events(client, job_id) if e["type"] == "download.started"]


def test_priority_pause_hold_start_bulk_and_delete(tmp_path, media):
    with services(tmp_path) as s:
        client, log = s["client"], s["log"]
        # Paused: nothing starts; the tickets wait per priority.
        paused = client.post("/api/queue/pause").json()
        assert paused["paused"] is True and paused["now"] is False
        jobs = {}
        for priority in ("low", "normal", "high"):  # the lowest first: first-come order would be the wrong one
            for _ in range(3):
                view = submit(client, media.url(media.fresh("clip1.mp4"), rate=SLOW), priority=priority)
                assert view["priority"] == priority
                jobs[view["id"]] = priority

        def waiting() -> dict:
            # Items of the jobs' views that no worker runs (paused: all of them).
            return {w["priority"]: w["waiting"] for w in client.get("/api/queue").json()["items"]}

        def tickets() -> dict:
            # A ticket taken as the pause came is handed back (counted as taken until it is waiting again).
            return {w["priority"]: w["tickets"] + w["taken"] for w in client.get("/api/queue").json()["items"]}

        wait_for(lambda: tickets() == {"high": 3, "normal": 3, "low": 3}, 30, "9 tickets", lambda: str(tickets()))
        wait_for(lambda: waiting() == {"high": 3, "normal": 3, "low": 3}, 30, "9 items", lambda: str(waiting()))
        time.sleep(1.0)
        assert all(not started_seqs(client, i) for i in jobs), "a download started while the queue was paused"
        # A held job resolves and waits; bulk start lists an unknown id as not found and starts the rest.
        held = submit(client, media.url(media.fresh("clip2.mp4")), start=False)
        wait_for(lambda: job(client, held["id"])["status"] == "held", 30, "held")
        assert client.get("/api/queue").json()["jobs"].get("held") == 1
        # Priority of a waiting job changes: one of the low ones goes first of all.
        promoted = next(i for i, p in jobs.items() if p == "low")
        changed = client.post(f"/api/jobs/{promoted}/priority", json={"priority": "high"})
        assert changed.status_code == 202 and changed.json()["priority"] == "high"
        jobs[promoted] = "high"
        wait_for(lambda: tickets()["high"] == 4, 30, "the promoted ticket", lambda: str(tickets()))
        # The promoted item waits at its new priority only (issue 23: its old, dropped ticket counted as waiting).
        wait_for(lambda: waiting() == {"high": 4, "normal": 3, "low": 2}, 30, "the items moved", lambda: str(waiting()))
        assert tickets()["low"] == 3  # the old ticket is still there, to be dropped when taken

        resumed = client.post("/api/queue/resume").json()
        assert resumed["paused"] is False
        views = finished(client, list(jobs), log)
        assert all(v["status"] == "completed" for v in views), [v["error"] for v in views]
        order = sorted((started_seqs(client, i)[0], jobs[i]) for i in jobs)
        ranks = [("high", "normal", "low").index(p) for _, p in order]
        assert ranks == sorted(ranks), f"downloads started out of priority order: {order}"
        # Each item downloaded once, even the promoted one (its first ticket was dropped).
        assert all(len(started_seqs(client, i)) == 1 for i in jobs)
        assert job(client, held["id"])["status"] == "held" and not started_seqs(client, held["id"])

        bulk = client.post(
            "/api/jobs/bulk", json={"action": "start", "ids": [held["id"], "01m0000000000000000000none"]}
        )
        assert bulk.status_code == 200, bulk.text
        answer = bulk.json()
        assert (answer["done"], answer["not_found"]) == (1, 1), answer
        finished(client, [held["id"]], log)
        again = client.post(f"/api/jobs/{held['id']}/start")
        assert again.status_code == 409 and "completed" in again.text
        assert client.post(f"/api/jobs/{held['id']}/priority", json={"priority": "low"}).status_code == 409
        bad = client.post("/api/jobs/bulk", json={"action": "priority", "ids": [held["id"]]})
        assert bad.status_code in (400, 422), bad.text

        # Delete: a second job reusing the first's download keeps its file when the first goes with its files.
        first = finished(client, [submit(client, media.url("clip3.mp4"))["id"]], log)[0]
        second = finished(client, [submit(client, media.url("clip3.mp4"))["id"]], log)[0]
        assert second["items"][0]["download"]["reused"] is True
        kept = s["data"] / "media" / second["items"][0]["download"]["file"]
        assert kept.is_file()
        gone = client.delete(f"/api/jobs/{first['id']}", params={"files": "true"})
        assert gone.status_code == 202 and gone.json()["deleted_at"]
        # The read model folds `job.deleted` a moment after the 202 (the answer above is the fold of the command).
        wait_for(lambda: client.get(f"/api/jobs/{first['id']}").status_code == 404, 10, "the deleted job to be 404")
        listed = [j["id"] for j in client.get("/api/jobs", params={"limit": 500}).json()["jobs"]]
        assert first["id"] not in listed and second["id"] in listed
        wait_for(lambda: not (s["data"] / "media" / first["id"]).exists(), 30, "the deleted job's folder to go")
        assert kept.is_file() and client.get(f"/media/{second['items'][0]['download']['file']}").status_code == 200


def test_pause_now_stops_running_downloads_and_resume_goes_on(tmp_path, media):
    # A media server of its own: its connections are this test's only (the shared one serves other tests' leftovers).
    with MediaServer(media.root) as media, services(tmp_path, downloaders=1) as s:
        client, log = s["client"], s["log"]
        view = submit(client, media.url(media.fresh("long.mp4"), rate=40_000))
        wait_for(
            lambda: (job(client, view["id"])["items"] or [{}])[0].get("download", {}).get("downloaded_bytes", 0) > 0,
            30,
            "bytes",
        )
        client.post("/api/queue/pause", params={"now": "true"})
        item = wait_for(
            lambda: (i := job(client, view["id"])["items"][0])["status"] == "queued" and i,
            30,
            "the item to stop",
            lambda: log.read_text()[-2000:],
        )
        assert item["waiting"]["code"] == "queue_paused"
        # Let go of at once: no connection left open and unread while paused (issue 23: it stayed until resume).
        port = int(media.base.rsplit(":", 1)[1])
        wait_for(lambda: open_connections(port) == 0, 5, "the paused download's connection to close")
        partial = list((s["data"] / "media" / view["id"]).glob("*.part"))
        assert partial, "the partial file was not kept"
        before = item["download"]["downloaded_bytes"]
        time.sleep(1.5)
        assert job(client, view["id"])["items"][0]["download"]["downloaded_bytes"] == before
        assert client.get("/api/queue").json()["paused"] is True
        client.post("/api/queue/resume")
        # Once more: a pause is not a failure, so it never counts as an attempt (issue 23: each one did, and ten
        # pauses would have dead-lettered the item).
        wait_for(
            lambda: job(client, view["id"])["items"][0]["download"]["downloaded_bytes"] > before,
            30,
            "bytes again",
            lambda: log.read_text()[-2000:],
        )
        client.post("/api/queue/pause", params={"now": "true"})
        wait_for(lambda: job(client, view["id"])["items"][0]["status"] == "queued", 30, "the item to stop again")
        client.post("/api/queue/resume")
        done = finished(client, [view["id"]], log)[0]
        assert done["status"] == "completed", done["error"]
        assert done["items"][0]["attempts"] == 1, done["items"][0]
        # Whole: every byte of the source (the metadata step adds a few tags, nothing is missing).
        size = (s["data"] / "media" / done["items"][0]["download"]["file"]).stat().st_size
        source = (media.root / "long.mp4").stat().st_size
        assert source <= size < source + 4096


def test_site_limit_is_held_across_processes_and_waiting_items_say_why(tmp_path, media):
    extra = {"TUBEFLOW_SITE_CONCURRENCY": "127.0.0.1=1"}
    with services(tmp_path, extra) as s:
        client, log = s["client"], s["log"]
        ids = [submit(client, media.url(media.fresh("clip1.mp4"), rate=SLOW))["id"] for _ in range(4)]
        said = wait_for(
            lambda: any(
                (i.get("waiting") or {}).get("code") == "site_limit" for v in ids for i in job(client, v)["items"]
            ),
            60,
            "an item waiting for its site",
        )
        assert said
        finished(client, ids, log)
        # Never two downloads of the site at once: each item's started..completed interval overlaps no other's.
        spans = []
        for job_id in ids:
            times = {e["type"]: e["occurred_at"] for e in events(client, job_id)}
            spans.append((times["download.started"], times["download.completed"]))
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert start >= end, f"two downloads of one site overlapped: {spans}"
        workers = {e["data"]["worker"] for j in ids for e in events(client, j) if e["type"] == "download.started"}
        assert len(workers) == 2, f"both downloaders should have taken items: {workers}"

        # Retention: an API with TUBEFLOW_JOB_RETENTION_DAYS deletes the finished jobs (their files too).
        port = free_port()
        env = {**s["env"], "TUBEFLOW_JOB_RETENTION_DAYS": "0.00001", "TUBEFLOW_RETENTION_EVERY": "0.5",
               "TUBEFLOW_RETENTION_DELETE_FILES": "true"}  # fmt: skip
        api = spawn_cli("service", "api", "--port", str(port), env=env, log=log)
        try:
            wait_for(
                lambda: client.get("/api/jobs").json()["jobs"] == [], 60, "retention", lambda: log.read_text()[-2000:]
            )
            # Its events stay readable.
            kept = events(client, ids[0])
            reasons = {e["data"].get("reason") for e in kept if e["type"] == "job.deleted"}
            assert reasons == {"retention"}
            wait_for(lambda: not (s["data"] / "media" / ids[0]).exists(), 30, "retention to remove files")
        finally:
            api.terminate()
            api.wait(20)


def test_skip_downloaded_skips_what_an_earlier_job_has(tmp_path, media):
    with services(tmp_path, downloaders=1) as s:
        client, log = s["client"], s["log"]
        have, new = media.fresh("clip1.mp4"), media.fresh("clip2.mp4")
        # Through a feed both times: the generic extractor names a feed's entry differently from the bare URL (a real
        # site's video has one id however it is reached).
        earlier = finished(client, [submit(client, media.feed_url(have))["id"]], log)[0]
        assert earlier["status"] == "completed"
        feed = submit(client, media.feed_url(f"{have},{new}"), skip_downloaded=True)
        view = finished(client, [feed["id"]], log)[0]
        assert view["status"] == "completed", view
        skipped, downloaded = view["items"]
        assert (
            skipped["status"] == "skipped"
            and skipped["download"]["existing"] == earlier["items"][0]["download"]["file"]
        )
        assert skipped["download"]["file"] is None and not (s["data"] / "media" / feed["id"] / Path(have).name).exists()
        assert downloaded["status"] == "completed" and downloaded["download"]["reused"] is False
        # Without the option the same feed reuses the file (hard-linked into its own folder) instead.
        again = finished(client, [submit(client, media.feed_url(have))["id"]], log)[0]
        assert again["items"][0]["download"]["reused"] is True
        assert again["items"][0]["download"]["file"].startswith(again["id"] + "/")
        assert skipped["download"]["existing_deleted"] is False
        # The earlier job deleted with its files: the skipped item says what it stood for is gone (issue 23: it
        # pointed at nothing, the job still completed), and the job that reused the file keeps its own copy.
        assert client.delete(f"/api/jobs/{earlier['id']}", params={"files": "true"}).status_code == 202

        def told() -> bool:
            return job(client, feed["id"])["items"][0]["download"]["existing_deleted"] is True

        wait_for(told, 30, "the skipped item told its file was deleted", lambda: log.read_text()[-2000:])
        after = job(client, feed["id"])
        assert (
            after["status"] == "completed"
            and after["items"][0]["download"]["existing"] == skipped["download"]["existing"]
        )
        assert (s["data"] / "media" / again["items"][0]["download"]["file"]).is_file()


def test_site_rate_holds_items_over_it_and_a_waiting_job_can_be_deleted_or_cancelled_by_filter(tmp_path, media):
    with services(tmp_path, {"TUBEFLOW_SITE_RATE": "127.0.0.1=2"}) as s:
        client, log = s["client"], s["log"]
        # The count is per minute: start early enough in one that the limit can't roll over under the test.
        if time.time() % 60 > 35:
            time.sleep(61 - time.time() % 60)
        marker = f"rate{time.monotonic_ns()}"
        ids = [submit(client, media.url(media.fresh("clip1.mp4")) + f"?{marker}={n}")["id"] for n in range(4)]

        def states() -> list[dict]:
            return [job(client, i) for i in ids]

        def two_done_two_waiting() -> bool:
            views = states()
            done = [v for v in views if v["status"] == "completed"]
            waiting = [
                v for v in views if v["items"] and (v["items"][0].get("waiting") or {}).get("code") == "site_limit"
            ]
            return len(done) == 2 and len(waiting) == 2

        wait_for(
            two_done_two_waiting, 60, "two downloads and two waiting for the rate", lambda: log.read_text()[-2000:]
        )
        held_back = [v for v in states() if v["status"] != "completed"]
        assert all("per minute" in v["items"][0]["waiting"]["message"] for v in held_back)
        # Deleting a job that has not ended cancels it first.
        gone = client.delete(f"/api/jobs/{held_back[0]['id']}")
        assert gone.status_code == 202 and gone.json()["status"] == "cancelled" and gone.json()["deleted_at"]
        # A filter picks the other one (running, its URL has the marker).
        bulk = client.post("/api/jobs/bulk", json={"action": "cancel", "filter": {"status": "running", "q": marker}})
        assert bulk.status_code == 200 and bulk.json()["done"] == 1, bulk.text
        assert bulk.json()["results"][0]["id"] == held_back[1]["id"]
        cancelled = finished(client, [held_back[1]["id"]], log)[0]
        assert cancelled["status"] == "cancelled" and not started_seqs(client, held_back[1]["id"])
