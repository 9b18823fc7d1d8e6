"""A 3-node JetStream cluster (three nats-server processes on loopback), streams with 3 replicas, every service a
process of its own and two downloaders; the node leading the event stream is SIGKILLed while a playlist with audio
is under way (issue 13, item 6)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from bench.harness import stop_all
from services.runtime.embedded import nats_server_binary
from tests.conftest import free_port, spawn_cli, start_stack, stop_stack, wait_ready
from tests.e2e.test_up import wait_gone

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]


class Node:
    def __init__(self, name: str, store: Path, port: int, route: int, monitor: int, routes: list[int]) -> None:
        self.name, self.store, self.port, self.route, self.monitor = name, store, port, route, monitor
        self.routes = routes
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        others = ",".join(f"nats://127.0.0.1:{r}" for r in self.routes if r != self.route)
        self.process = subprocess.Popen(
            [
                nats_server_binary(), "-js", "-n", self.name, "-a", "127.0.0.1", "-p", str(self.port),
                "-sd", str(self.store), "--cluster_name", "tubeflow-test",
                "--cluster", f"nats://127.0.0.1:{self.route}", "--routes", others, "-m", str(self.monitor),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.store.parent / f"{self.name}.log", "ab"),
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


def stream_leader(nodes: list[Node], stream: str = "TUBEFLOW_EVENTS") -> str | None:
    alive = [f"http://127.0.0.1:{n.monitor}" for n in nodes if n.process is not None and n.process.poll() is None]
    return leader_of(alive, stream)


def leader_of(monitors: list[str], stream: str = "TUBEFLOW_EVENTS") -> str | None:
    """The name of the node leading ``stream``, asked of the monitoring ports ``monitors`` (the first that knows)."""
    for monitor in monitors:
        try:
            data = httpx.get(f"{monitor}/jsz?streams=true", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            continue
        for account in data.get("account_details") or []:
            for detail in account.get("stream_detail") or []:
                if detail.get("name") == stream and (detail.get("cluster") or {}).get("leader"):
                    return detail["cluster"]["leader"]
    return None


def wait_until(check, timeout: float, what: str):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def read_view(base: str, job: str) -> dict:
    """The job's view; while the cluster elects a new leader the API may answer 503 (never 500)."""
    response = httpx.get(f"{base}/api/jobs/{job}", timeout=10)
    assert response.status_code in (200, 503), response.text
    if response.status_code == 503:
        assert response.json()["errors"][0]["code"] == "nats_unavailable" and response.headers["retry-after"]
        return {"status": "unavailable", "download": {"completed": 0}}
    return response.json()


def finished(view: dict) -> dict | None:
    return view if view["status"] in ("completed", "partial", "failed", "cancelled") else None


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def cluster(tmp_path):
    routes = [free_port() for _ in range(3)]
    nodes = [Node(f"n{i}", tmp_path / f"n{i}", free_port(), routes[i], free_port(), routes) for i in range(3)]
    for node in nodes:
        node.store.mkdir()
        node.start()
    try:
        yield nodes
    finally:
        for node in nodes:
            node.kill()


def test_the_stream_leader_dies_mid_playlist_and_the_job_completes_exactly_once(cluster, media, tmp_path):
    url = ",".join(f"nats://127.0.0.1:{node.port}" for node in cluster)
    env = {
        **os.environ,
        "TUBEFLOW_NATS_URL": url,
        "TUBEFLOW_STREAM_REPLICAS": "3",
        "TUBEFLOW_DECLARE": "false",
        "TUBEFLOW_DATA_DIR": str(tmp_path / "data"),
        "TUBEFLOW_ALLOWED_NETWORKS": "127.0.0.0/8",
        "TUBEFLOW_RETRY_DELAY": "0.2",
        "TUBEFLOW_RATE_LIMIT": "0",
        "PYTHONUNBUFFERED": "1",
    }
    # The cluster elects its JetStream leader first: setup is tried until it goes through.
    wait_until(lambda: run_cli("setup", env=env).returncode == 0, 60, "tubeflow setup on the new cluster")
    port = free_port()
    processes = [spawn_cli("service", "api", "--port", str(port), env=env, log=tmp_path / "api.log")]
    for name in ("progress", "extractor"):
        processes.append(spawn_cli("service", name, env=env, log=tmp_path / f"{name}.log"))
    for n in (1, 2):
        processes.append(
            spawn_cli(
                "service", "downloader", env={**env, "TUBEFLOW_WORKER_NAME": f"dl{n}"}, log=tmp_path / f"dl{n}.log"
            )
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, timeout=60)
        names = [media.fresh(f"clip{1 + n % 3}.mp4") for n in range(6)]
        feed = media.feed_url(",".join(f"{name}@60000" for name in names))
        job = httpx.post(f"{base}/api/jobs", json={"url": feed, "mode": "both"}, timeout=10).json()["id"]

        def view() -> dict:
            return read_view(base, job)

        wait_until(lambda: view()["download"]["completed"] >= 1, 60, "a first item downloaded")
        leader = wait_until(lambda: stream_leader(cluster), 10, "the stream's leader")
        victim = next(node for node in cluster if node.name == leader)
        killed_at = time.monotonic()
        victim.kill()

        # How long new jobs can't be written (the stream elects a new leader): a submission is tried until taken.
        def submitted() -> str | None:
            answer = httpx.post(f"{base}/api/jobs", json={"url": media.url(media.fresh("clip2.mp4"))}, timeout=10)
            assert answer.status_code in (202, 503), answer.text
            return answer.json()["id"] if answer.status_code == 202 else None

        during = wait_until(submitted, 60, "a job accepted during the outage")
        writes_back = time.monotonic() - killed_at
        final = wait_until(lambda: finished(view()), 120, "the job ended")
        took = time.monotonic() - killed_at
        assert wait_until(lambda: finished(read_view(base, during)), 60, "the job sent in the outage")["status"] == (
            "completed"
        )
        assert final["status"] == "completed", final
        assert final["download"]["completed"] == 6 and final["extract"]["completed"] == 6, final["download"]
        events = httpx.get(f"{base}/api/jobs/{job}/events", params={"limit": 1000}, timeout=10).json()
        done = Counter(e["item_id"] for e in events if e["type"] == "download.completed")
        extracted = Counter(e["item_id"] for e in events if e["type"] == "extract.completed")
        assert set(done.values()) == {1} and len(done) == 6, done
        assert set(extracted.values()) == {1} and len(extracted) == 6, extracted
        # The read models agree with the stream while the node is still away.
        verified = run_cli("verify", env=env)
        assert verified.returncode == 0, verified.stdout + verified.stderr

        # The node comes back with its store and catches up; a new job completes.
        victim.start()
        wait_until(lambda: stream_leader(cluster), 30, "a leader after the restart")
        again = httpx.post(
            f"{base}/api/jobs", json={"url": media.url(media.fresh("clip1.mp4")), "mode": "audio"}, timeout=10
        ).json()["id"]
        ended = wait_until(lambda: finished(read_view(base, again)), 60, "the job after the restart")
        assert ended["status"] == "completed", ended
        print(json.dumps({"leader_killed": leader, "writes_back_after_s": round(writes_back, 1),
                          "job_ended_after_s": round(took, 1)}))  # fmt: skip
    finally:
        stop_all(processes)


def test_up_with_an_embedded_cluster_loses_a_node_mid_playlist_and_gets_it_back(media, tmp_path, monkeypatch):
    """`tubeflow up --cluster 3`: three nats-server nodes, three replicas; the stream's leader SIGKILLed mid-playlist,
    the job completes exactly once, `up` starts the node again, and a stop leaves nothing behind (issue 13, item 4)."""
    monkeypatch.delenv("TUBEFLOW_NATS_URL", raising=False)
    data_dir = tmp_path / "data"
    env = {"TUBEFLOW_ALLOWED_NETWORKS": "127.0.0.0/8", "TUBEFLOW_RETRY_DELAY": "0.2"}
    stack = start_stack(data_dir, env, args=("--cluster", "3"), timeout=60)
    try:
        described = re.findall(r"^  (n\d)  pid (\d+) .* monitor (http://\S+)/jsz$", stack.log.read_text(), re.M)
        pids = {name: int(pid) for name, pid, _ in described}
        monitors = [monitor for _, _, monitor in described]
        assert len(pids) == 3 and len(monitors) == 3, stack.log.read_text()
        names = [media.fresh(f"clip{1 + n % 3}.mp4") for n in range(4)]
        feed = media.feed_url(",".join(f"{name}@60000" for name in names))
        job = httpx.post(f"{stack.base}/api/jobs", json={"url": feed, "mode": "both"}, timeout=10).json()["id"]
        wait_until(lambda: read_view(stack.base, job)["download"]["completed"] >= 1, 60, "a first item downloaded")
        leader = wait_until(lambda: leader_of(monitors), 10, "the stream's leader")
        os.kill(pids[leader], signal.SIGKILL)
        final = wait_until(lambda: finished(read_view(stack.base, job)), 120, "the job ended")
        assert final["status"] == "completed", final
        assert final["download"]["completed"] == 4 and final["extract"]["completed"] == 4, final
        events = httpx.get(f"{stack.base}/api/jobs/{job}/events", params={"limit": 1000}, timeout=10).json()
        done = Counter(e["item_id"] for e in events if e["type"] == "download.completed")
        assert set(done.values()) == {1} and len(done) == 4, done
        wait_until(lambda: f"NATS node {leader} is back" in stack.log.read_text(), 30, "the node started again")
        again = httpx.post(
            f"{stack.base}/api/jobs", json={"url": media.url(media.fresh("clip1.mp4")), "mode": "audio"}, timeout=10
        ).json()["id"]
        assert wait_until(lambda: finished(read_view(stack.base, again)), 60, "a job after")["status"] == "completed"
    finally:
        code = stop_stack(stack, timeout=60)
    assert code == 0, stack.log.read_text()[-3000:]
    assert wait_gone(str(data_dir)) == [], "a process of `tubeflow up --cluster 3` outlived it"
    assert "Traceback" not in stack.log.read_text()
