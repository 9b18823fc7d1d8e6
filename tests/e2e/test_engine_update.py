"""yt-dlp updated at run time (issue 27), from a local package index on loopback holding the installed yt-dlp rebuilt
as a higher version: the update is checked and recorded, a job running across it completes, the jobs after it run
on the new version in two downloader processes (their heartbeats and each download say so), a rollback returns
both; a wheel that fails to import, or a version the index lacks, is an `engine.update_failed` that changes
nothing."""

from __future__ import annotations

import httpx
import pytest

from bench.harness import FinishedJobs, nats_server, tubeflow
from services.engine.updates import bundled_version
from tests.support.processes import wait_for
from tests.support.wheels import package_index, ytdlp_wheel

pytestmark = pytest.mark.e2e

NEW = "2099.01.01"
BROKEN = "2099.02.02"


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("index")
    ytdlp_wheel(root, NEW)
    ytdlp_wheel(root, BROKEN, broken=True)
    with package_index(root) as url:
        yield url


def test_update_switches_every_downloader_at_its_next_idle_moment_and_rollback_returns(media, index):
    bundled = bundled_version()
    env = {"UV_INDEX_URL": index, "TUBEFLOW_DOWNLOAD_CONCURRENCY": "2"}
    with nats_server() as server, tubeflow(server.url, ["api", "progress", "downloader", "downloader"], env) as stack:
        finished = FinishedJobs(stack.base)
        client = httpx.Client(base_url=stack.base, timeout=300)
        try:

            def engines() -> dict[str, str]:
                return {p["worker"]: p["engine"] for p in client.get("/api/engine").json()["processes"]}

            def run(urls: list[str]) -> list[dict]:
                ids = [client.post("/api/jobs", json={"url": u, "metadata": False}).json()["id"] for u in urls]
                finished.wait(ids, timeout=120)
                return [client.get(f"/api/jobs/{job}/events").json() for job in ids]

            def completed(events: list[dict]) -> dict:
                return next(e["data"] for e in events if e["type"] == "download.completed")

            wait_for(lambda: len(engines()) == 2 and set(engines().values()) == {bundled}, 30, "two heartbeats")
            state = client.get("/api/engine").json()
            assert state["in_force"] == bundled and state["previous"] is None

            # A download running across the update finishes (on the version it started with).
            before = client.post(
                "/api/jobs", json={"url": media.url(media.fresh("long.mp4"), rate=400_000), "metadata": False}
            ).json()["id"]
            wait_for(lambda: client.get(f"/api/jobs/{before}").json()["status"] == "running", 30, "a running download")
            updated = client.post("/api/engine/update", json={"version": NEW})
            assert updated.status_code == 200, updated.text
            assert updated.json()["version"] == NEW and updated.json()["previous"] == bundled
            finished.wait([before], timeout=120)
            assert client.get(f"/api/jobs/{before}").json()["status"] == "completed"

            wait_for(lambda: set(engines().values()) == {NEW}, 30, "both downloaders on the new version")
            after = run([media.url(media.fresh("clip1.mp4")) for _ in range(4)])
            assert {completed(events)["engine"] for events in after} == {NEW}
            info = client.get("/api/info").json()
            assert info["yt_dlp"] == NEW and info["yt_dlp_bundled"] == bundled
            assert set(info["yt_dlp_running"].values()) == {NEW}

            # A wheel that fails to import, and a version the index lacks: failed, named, nothing changes.
            broken = client.post("/api/engine/update", json={"version": BROKEN})
            assert broken.status_code == 422 and "broken on purpose" in broken.text, broken.text
            missing = client.post("/api/engine/update", json={"version": "2099.09.09"})
            assert missing.status_code == 422 and "2099.09.09" in missing.json()["errors"][0]["message"], missing.text
            state = client.get("/api/engine").json()
            assert state["in_force"] == NEW and "2099.09.09" in state["last_failure"]["reason"]
            assert sorted(state["installed"]) == [NEW]  # nothing half-installed left behind
            bad = client.post("/api/engine/update", json={"version": "1.0; rm -rf /"})
            assert bad.status_code == 422 and bad.json()["errors"][0]["field"].endswith("version"), bad.text
            assert {completed(events)["engine"] for events in run([media.url(media.fresh("clip2.mp4"))])} == {NEW}

            # Rollback: both back on the bundled version.
            back = client.post("/api/engine/rollback")
            assert back.status_code == 200 and back.json()["version"] == bundled and back.json()["rollback"]
            wait_for(lambda: set(engines().values()) == {bundled}, 30, "both downloaders back")
            again = run([media.url(media.fresh("clip1.mp4")) for _ in range(2)])
            assert {completed(events)["engine"] for events in again} == {bundled}
        finally:
            client.close()
            finished.close()


def test_without_the_token_an_update_is_refused(index):
    env = {"UV_INDEX_URL": index, "TUBEFLOW_API_TOKEN": "s3cret-engine"}
    with nats_server() as server, tubeflow(server.url, ["api"], env) as stack:
        refused = httpx.post(f"{stack.base}/api/engine/update", json={"version": NEW}, timeout=30)
        assert refused.status_code == 401, refused.text
        shown = httpx.get(f"{stack.base}/api/engine", headers={"Authorization": "Bearer s3cret-engine"}, timeout=30)
        assert shown.status_code == 200 and shown.json()["installed"] == []
