"""`tubeflow up` with its embedded NATS: one command, a stop that leaves nothing behind, a restart that remembers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bench.harness import process_tree
from tests.conftest import free_port, start_stack, stop_stack, wait_ready
from tests.support.processes import processes_mentioning

pytestmark = pytest.mark.e2e


def children_of(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def downloader_child(pid: int) -> int:
    """`tubeflow up` runs the downloader as a child process (`tubeflow service downloader`)."""
    for child in children_of(pid):
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"service downloader" in cmdline:
            return child
    raise AssertionError(f"no downloader child of {pid}: {children_of(pid)}")


def wait_pid_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":  # exited, waiting for its parent to reap it
            return True
        time.sleep(0.1)
    return False


def wait_gone(text: str, timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = processes_mentioning(text)
        if not left:
            return []
        time.sleep(0.1)
    return processes_mentioning(text)


def test_up_runs_everything_stops_cleanly_and_keeps_jobs_across_restarts(tmp_path, media, monkeypatch):
    monkeypatch.delenv("TUBEFLOW_NATS_URL", raising=False)
    data_dir = tmp_path / "data"
    stack = start_stack(data_dir, {"TUBEFLOW_ALLOW_PRIVATE_URLS": "true"})
    try:
        assert processes_mentioning(str(data_dir / "nats")), "no embedded nats-server storing under the data dir"
        downloader = downloader_child(stack.process.pid)
        job = httpx.post(f"{stack.base}/api/jobs", json={"url": media.url("clip1.mp4"), "mode": "audio"}).json()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            view = httpx.get(f"{stack.base}/api/jobs/{job['id']}").json()
            if view["status"] == "completed":
                break
            time.sleep(0.1)
        assert view["status"] == "completed", view
    finally:
        code = stop_stack(stack)
    assert code == 0, stack.log.read_text()[-2000:]
    assert wait_gone(str(data_dir)) == [], "a child process outlived `tubeflow up`"
    assert wait_pid_gone(downloader), "the downloader child outlived `tubeflow up`"

    again = start_stack(data_dir, {"TUBEFLOW_ALLOW_PRIVATE_URLS": "true"})
    try:
        assert httpx.get(f"{again.base}/api/jobs/{job['id']}").json() == view
        assert job["id"] in [j["id"] for j in httpx.get(f"{again.base}/api/jobs").json()["jobs"]]
    finally:
        assert stop_stack(again) == 0


def test_up_killed_outright_takes_its_nats_server_along(tmp_path, monkeypatch):
    monkeypatch.delenv("TUBEFLOW_NATS_URL", raising=False)
    data_dir = tmp_path / "data"
    stack = start_stack(data_dir, {})
    assert processes_mentioning(str(data_dir / "nats"))
    downloader = downloader_child(stack.process.pid)
    os.kill(stack.process.pid, signal.SIGKILL)
    stack.process.wait()
    assert wait_gone(str(data_dir)) == []
    assert wait_pid_gone(downloader), "the downloader child outlived a killed `tubeflow up`"


def test_up_stopped_mid_job_finishes_it_after_a_restart(tmp_path, media, monkeypatch):
    monkeypatch.delenv("TUBEFLOW_NATS_URL", raising=False)
    data_dir = tmp_path / "data"
    env = {"TUBEFLOW_ALLOWED_NETWORKS": "127.0.0.0/8", "TUBEFLOW_SHUTDOWN_GRACE": "5"}
    stack = start_stack(data_dir, env)
    try:
        job = httpx.post(
            f"{stack.base}/api/jobs", json={"url": media.url("long.mp4", rate=40_000), "metadata": False}
        ).json()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            view = httpx.get(f"{stack.base}/api/jobs/{job['id']}").json()
            if view["items"] and view["items"][0]["download"]["downloaded_bytes"] > 40_000:
                break
            time.sleep(0.05)
    finally:
        assert stop_stack(stack) == 0
    assert view["status"] == "running"
    again = start_stack(data_dir, env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            view = httpx.get(f"{again.base}/api/jobs/{job['id']}").json()
            if view["status"] != "running":
                break
            time.sleep(0.1)
        assert view["status"] == "completed", view
        assert view["items"][0]["download"]["size"] == (media.root / "long.mp4").stat().st_size
    finally:
        assert stop_stack(again) == 0


def test_up_exits_with_an_error_when_its_port_is_taken(tmp_path, monkeypatch):
    import socket
    import subprocess
    import sys

    from tests.conftest import ROOT, free_port

    monkeypatch.delenv("TUBEFLOW_NATS_URL", raising=False)
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = subprocess.run(
            [sys.executable, "-m", "services.cli", "up", "--port", str(port), "--data-dir", str(tmp_path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert "could not start" in result.stderr
    assert wait_gone(str(tmp_path)) == []


STOPS = {
    "sigint-to-the-group": lambda pid: os.killpg(pid, signal.SIGINT),  # Ctrl-C in a terminal
    "sigterm-to-the-parent": lambda pid: os.kill(pid, signal.SIGTERM),  # systemd, docker stop, kill
    "sigkill-to-the-parent": lambda pid: os.kill(pid, signal.SIGKILL),  # the OOM killer, kill -9
}


@pytest.mark.parametrize("how", list(STOPS))
def test_stopped_or_killed_mid_download_nothing_of_the_tree_is_left(tmp_path, media, how):
    """Whatever stops `tubeflow up` while two downloads run (a terminal's SIGINT to its whole group, SIGTERM or
    SIGKILL to the parent alone), no process of its tree is left after 30 s and nothing prints a traceback. Stopped
    (not killed) it hands its downloads back, then stops its NATS server, and says "stopping…" and "stopped"."""
    data_dir = tmp_path / "data"
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "TUBEFLOW_NATS_URL"},
        "TUBEFLOW_ALLOWED_NETWORKS": "127.0.0.0/8",
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up", "--port", str(port), "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own group, as a terminal's foreground job
    )
    tree: list[int] = []
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base)
        jobs = [
            httpx.post(f"{base}/api/jobs", json={"url": media.url(media.fresh("long.mp4"), rate=30_000)}).json()
            for _ in range(2)
        ]
        deadline = time.monotonic() + 30
        for job in jobs:
            while httpx.get(f"{base}/api/jobs/{job['id']}").json()["status"] != "running":
                assert time.monotonic() < deadline, "the downloads did not start"
                time.sleep(0.1)
        time.sleep(1.0)
        tree = process_tree(process.pid)
        assert len(tree) >= 5, tree  # up, nats-server, the downloader, its zygote and a slot process (both downloads)
        STOPS[how](process.pid)
        # The pipes close when the last process holding them (every one of the tree) is gone.
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        left = [pid for pid in tree if not wait_pid_gone(pid, timeout=1)]
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert left == [], f"left behind: {left}"
    text = out.decode() + err.decode()
    assert "Traceback" not in text, text[-3000:]
    if how == "sigkill-to-the-parent":
        assert process.returncode == -signal.SIGKILL
        return
    assert process.returncode == 0
    assert "WARNING" not in text, text[-3000:]
    assert "stopping…" in out.decode() and out.decode().rstrip().endswith("stopped")
