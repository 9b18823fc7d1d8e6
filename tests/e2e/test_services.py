"""Scale-out on one machine: `tubeflow service NAME` processes against one NATS server. Two downloaders share a
12-item playlist item by item, two APIs stream the same job identically, and killing one downloader mid-way still
completes the job."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from services.runtime.embedded import EmbeddedNats
from tests.conftest import free_port, spawn_cli, wait_ready
from tests.support.sse import sse_events

pytestmark = pytest.mark.e2e


def spawn(name: str, env: dict[str, str], log: Path, *args: str) -> subprocess.Popen:
    return spawn_cli("service", name, *args, env={**os.environ, **env}, log=log)


async def follow(base: str, job_id: str) -> list:
    async with httpx.AsyncClient(timeout=httpx.Timeout(120)) as client:
        async with client.stream("GET", f"{base}/api/jobs/{job_id}/stream") as response:
            return [message async for message in sse_events(response)]


def final_state(messages: list) -> tuple[dict, dict]:
    job, items = {}, {}
    for message in messages:
        if message.event == "job":
            job = message.json()
        else:
            items[message.json()["id"]] = message.json()
    return job, items


async def test_two_downloaders_share_a_playlist_two_apis_agree_and_a_killed_downloader_loses_nothing(tmp_path, media):
    server = EmbeddedNats(tmp_path / "nats")
    url = server.start()
    ports = [free_port(), free_port()]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    common = {
        "TUBEFLOW_NATS_URL": url,
        "TUBEFLOW_DATA_DIR": str(tmp_path / "data"),
        "TUBEFLOW_ALLOWED_NETWORKS": "127.0.0.0/8",
        "TUBEFLOW_DOWNLOAD_CONCURRENCY": "1",
        "TUBEFLOW_ACK_WAIT": "3",
    }
    log = tmp_path / "services.log"
    processes = {
        "dl-a": spawn("downloader", {**common, "TUBEFLOW_WORKER_NAME": "dl-a"}, log),
        "dl-b": spawn("downloader", {**common, "TUBEFLOW_WORKER_NAME": "dl-b"}, log),
        "extractor": spawn("extractor", common, log),
        "progress": spawn("progress", common, log),
        "api-1": spawn("api", common, log, "--port", str(ports[0])),
        "api-2": spawn("api", common, log, "--port", str(ports[1])),
    }
    try:
        for base in bases:
            await asyncio.to_thread(wait_ready, base)
        names = ",".join(f"{media.fresh(f'clip{i % 3 + 1}.mp4')}@80000" for i in range(12))
        job = httpx.post(f"{bases[0]}/api/jobs", json={"url": media.feed_url(names), "mode": "both"}).json()
        streams = [asyncio.create_task(follow(base, job["id"])) for base in bases]

        def some_done() -> bool:
            return httpx.get(f"{bases[1]}/api/jobs/{job['id']}").json()["download"]["completed"] >= 4

        deadline = time.monotonic() + 60
        while not await asyncio.to_thread(some_done):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.1)
        processes["dl-b"].send_signal(signal.SIGKILL)
        processes["dl-b"].wait()
        finals = [final_state(messages) for messages in await asyncio.wait_for(asyncio.gather(*streams), 120)]
        (job_1, items_1), (job_2, items_2) = finals
        assert job_1["status"] == "completed", (job_1, log.read_text()[-3000:])
        assert job_1 == job_2 and items_1 == items_2, "the two APIs told different stories"
        assert job_1["download"]["completed"] == 12 and job_1["extract"]["completed"] == 12
        events = httpx.get(f"{bases[1]}/api/jobs/{job['id']}/events").json()
        by_worker: dict[str, list[str]] = {}
        for event in events:
            if event["type"] == "download.completed":
                by_worker.setdefault(event["data"]["worker"], []).append(event["item_id"])
        assert set(by_worker) == {"dl-a", "dl-b"}, by_worker
        assert sorted(sum(by_worker.values(), [])) == [f"{i:04d}" for i in range(1, 13)]  # each item exactly once
        views = [httpx.get(f"{base}/api/jobs/{job['id']}").json() for base in bases]
        assert views[0] == views[1]
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = {name: process.wait(30) for name, process in processes.items()}
        server.stop()
    assert all(code == 0 for name, code in codes.items() if name != "dl-b"), (codes, log.read_text()[-3000:])
