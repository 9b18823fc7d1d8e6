"""Crashes and outages with separate service processes on one real NATS server: a downloader killed with SIGKILL
mid-download, a NATS server restarted mid-job, SIGTERM handing work back."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from services.runtime.embedded import EmbeddedNats
from tests.conftest import free_port, wait_ready
from tests.e2e.test_services import spawn
from tests.support.sse import sse_events

pytestmark = pytest.mark.e2e


class Cluster:
    def __init__(self, tmp_path, port: int) -> None:
        self.tmp_path = tmp_path
        self.nats = EmbeddedNats(tmp_path / "nats", port=free_port())
        self.nats.start()
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log = tmp_path / "services.log"
        self.env = {
            "TUBEFLOW_NATS_URL": self.nats.url,
            "TUBEFLOW_DATA_DIR": str(tmp_path / "data"),
            "TUBEFLOW_ALLOWED_NETWORKS": "127.0.0.0/8",
            "TUBEFLOW_ACK_WAIT": "3",
            "TUBEFLOW_PROGRESS_INTERVAL": "0.1",
            "TUBEFLOW_SHUTDOWN_GRACE": "5",
        }
        self.processes = {}

    def start(self, name: str, service: str, **env: str):
        args = ("--port", str(self.port)) if service == "api" else ()
        self.processes[name] = spawn(service, {**self.env, **env}, self.log, *args)
        return self.processes[name]

    def wait_ready(self) -> None:
        wait_ready(self.base, explain=lambda: self.log.read_text()[-3000:])

    def view(self, job_id: str) -> dict:
        return httpx.get(f"{self.base}/api/jobs/{job_id}", timeout=5).json()

    def wait(self, job_id: str, predicate, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        view = None
        while time.monotonic() < deadline:
            try:
                view = self.view(job_id)
                if predicate(view):
                    return view
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"timed out: {view}\n{self.log.read_text()[-3000:]}")

    def stop(self) -> dict[str, int]:
        codes = {}
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(30)
            except Exception:
                process.kill()
                codes[name] = process.wait()
        self.nats.stop()
        return codes


@pytest.fixture
def cluster(tmp_path):
    running = Cluster(tmp_path, free_port())
    yield running
    running.stop()


def test_a_killed_downloader_hands_its_item_to_another_which_resumes_with_range(cluster, media):
    dl_a = cluster.start("dl-a", "downloader", TUBEFLOW_WORKER_NAME="dl-a")
    for service in ("extractor", "progress", "api"):
        cluster.start(service, service)
    cluster.wait_ready()
    url = media.url("long.mp4", rate=50_000)
    job = httpx.post(f"{cluster.base}/api/jobs", json={"url": url, "mode": "audio", "metadata": False}).json()
    cluster.wait(job["id"], lambda v: v["items"] and v["items"][0]["download"]["downloaded_bytes"] > 60_000)
    dl_a.send_signal(signal.SIGKILL)
    dl_a.wait()
    cluster.start("dl-b", "downloader", TUBEFLOW_WORKER_NAME="dl-b")
    view = cluster.wait(job["id"], lambda v: v["status"] not in ("queued", "resolving", "running"))
    assert view["status"] == "completed", view
    assert view["download"]["completed"] == 1 and view["extract"]["completed"] == 1
    events = httpx.get(f"{cluster.base}/api/jobs/{job['id']}/events").json()
    completed = [e for e in events if e["type"] == "download.completed"]
    assert [e["data"]["worker"] for e in completed] == ["dl-b"]
    assert completed[0]["data"]["size"] == (media.root / "long.mp4").stat().st_size
    resumed = [r for p, r in media.ranges if p.endswith("/long.mp4") and r and not r.startswith("bytes=0-")]
    assert resumed, f"no Range request resumed the partial file: {media.ranges[-5:]}"
    assert view["items"][0]["attempts"] == 2


async def test_a_nats_restart_mid_job_loses_nothing(cluster, media):
    for service in ("downloader", "extractor", "progress", "api"):
        cluster.start(service, service)
    cluster.wait_ready()
    job = httpx.post(
        f"{cluster.base}/api/jobs", json={"url": media.url("long.mp4", rate=60_000), "mode": "both"}
    ).json()
    messages = []

    async def follow() -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(90)) as client:
            async with client.stream("GET", f"{cluster.base}/api/jobs/{job['id']}/stream") as response:
                async for message in sse_events(response):
                    messages.append(message)

    stream = asyncio.create_task(follow())
    await asyncio.to_thread(cluster.wait, job["id"], lambda v: v["status"] == "running")
    cluster.nats.stop()
    ready = httpx.get(f"{cluster.base}/readyz").status_code
    await asyncio.sleep(1.5)
    cluster.nats.start()  # same port, same store
    await asyncio.wait_for(stream, 60)
    view = await asyncio.to_thread(cluster.wait, job["id"], lambda v: v["status"] == "completed")
    assert ready == 503
    assert messages[-1].event == "job" and messages[-1].json()["status"] == "completed"
    assert view["download"]["completed"] == 1 and view["extract"]["completed"] == 1
    ids = [int(m.id) for m in messages]
    assert ids == sorted(ids)


def test_sigterm_hands_work_back_and_exits_zero(cluster, media):
    first = cluster.start("dl-a", "downloader", TUBEFLOW_WORKER_NAME="dl-a")
    for service in ("extractor", "progress", "api"):
        cluster.start(service, service)
    cluster.wait_ready()
    job = httpx.post(f"{cluster.base}/api/jobs", json={"url": media.url("long.mp4", rate=40_000)}).json()
    cluster.wait(job["id"], lambda v: v["items"] and v["items"][0]["download"]["downloaded_bytes"] > 40_000)
    started = time.monotonic()
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0
    assert time.monotonic() - started < 10
    cluster.start("dl-b", "downloader", TUBEFLOW_WORKER_NAME="dl-b")
    view = cluster.wait(job["id"], lambda v: v["status"] == "completed")
    assert view["items"][0]["worker"] == "dl-b"


async def test_two_projector_replicas_and_a_killed_one_still_give_exactly_the_fold(cluster, media):
    import nats as nats_client

    from services.progress.rebuild import verify

    first = cluster.start("progress-a", "progress", TUBEFLOW_WORKER_NAME="proj-a")
    cluster.start("progress-b", "progress", TUBEFLOW_WORKER_NAME="proj-b")
    for service in ("downloader", "extractor", "api"):
        cluster.start(service, service)
    await asyncio.to_thread(cluster.wait_ready)
    names = ",".join(f"clip{i % 3 + 1}.mp4@{150_000 + i}" for i in range(6))
    job = httpx.post(f"{cluster.base}/api/jobs", json={"url": media.feed_url(names), "mode": "both"}).json()
    await asyncio.to_thread(cluster.wait, job["id"], lambda v: v["download"]["completed"] >= 2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    view = await asyncio.to_thread(cluster.wait, job["id"], lambda v: v["status"] == "completed")
    assert view["download"]["completed"] == 6 and view["extract"]["completed"] == 6
    nc = await nats_client.connect(cluster.nats.url)
    try:
        assert await verify(nc.jetstream()) == []
    finally:
        await nc.close()
