"""`tubeflow service NAME` processes against one NATS server: two downloaders share a playlist item by item."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from services.runtime.embedded import EmbeddedNats
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.e2e


def spawn(name: str, env: dict[str, str], log: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "services.runtime.cli", "service", name, *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def test_two_downloader_processes_share_one_playlist(tmp_path, media):
    server = EmbeddedNats(tmp_path / "nats")
    url = server.start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    common = {
        "TUBEFLOW_NATS_URL": url,
        "TUBEFLOW_DATA_DIR": str(tmp_path / "data"),
        "TUBEFLOW_ALLOW_PRIVATE_URLS": "true",
        "TUBEFLOW_DOWNLOAD_CONCURRENCY": "1",
    }
    log = tmp_path / "services.log"
    processes = [
        spawn("downloader", {**common, "TUBEFLOW_WORKER_NAME": "dl-a"}, log),
        spawn("downloader", {**common, "TUBEFLOW_WORKER_NAME": "dl-b"}, log),
        spawn("extractor", common, log),
        spawn("progress", common, log),
        spawn("api", common, log, "--port", str(port)),
    ]
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        names = ",".join(["long.mp4@300000", "clip1.mp4@60000", "clip2.mp4@60000", "clip3.mp4@60000"] * 2)
        job = httpx.post(f"{base}/api/jobs", json={"url": media.feed_url(names), "mode": "both"}).json()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            view = httpx.get(f"{base}/api/jobs/{job['id']}").json()
            if view["status"] not in ("queued", "resolving", "running"):
                break
            time.sleep(0.2)
        assert view["status"] == "completed", (view, log.read_text()[-3000:])
        assert view["download"]["completed"] == 8 and view["extract"]["completed"] == 8
        events = httpx.get(f"{base}/api/jobs/{job['id']}/events").json()
        by_worker = {}
        for event in events:
            if event["type"] == "download.completed":
                by_worker.setdefault(event["data"]["worker"], []).append(event["item_id"])
        assert set(by_worker) == {"dl-a", "dl-b"}, by_worker
        assert sorted(sum(by_worker.values(), [])) == [f"{i:04d}" for i in range(1, 9)]  # each item exactly once
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(30) for process in processes]
        server.stop()
    assert codes == [0] * len(processes), log.read_text()[-3000:]
