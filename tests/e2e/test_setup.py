"""`tubeflow setup` declares everything idempotently and says what changed; services started with
TUBEFLOW_DECLARE=false use it; workers answer /healthz, /readyz and /metrics for their probes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from services.runtime.embedded import EmbeddedNats
from tests.conftest import ROOT, free_port, wait_ready

pytestmark = pytest.mark.e2e


def tubeflow(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_setup_is_idempotent_reports_changes_and_workers_expose_health(tmp_path):
    server = EmbeddedNats(tmp_path / "nats")
    env = {"TUBEFLOW_NATS_URL": server.start(), "TUBEFLOW_DATA_DIR": str(tmp_path / "data")}
    process = None
    try:
        first = tubeflow("setup", env=env)
        assert first.returncode == 0, first.stderr
        for line in (
            "created stream TUBEFLOW_EVENTS",
            "created stream TUBEFLOW_DLQ",
            "created bucket tubeflow_jobs",
            "created consumer downloader-items-v1",
            "created consumer extractor-v1",
        ):
            assert line in first.stdout
        second = tubeflow("setup", env=env)
        assert second.returncode == 0 and "created" not in second.stdout
        assert "unchanged consumer downloader-resolve-v1" in second.stdout
        changed = tubeflow("setup", env={**env, "TUBEFLOW_ACK_WAIT": "45"})
        assert (
            changed.returncode == 0 and "updated consumer downloader-items-v1: ack_wait 30.0 -> 45.0" in changed.stdout
        )

        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "service", "downloader"],
            cwd=ROOT,
            env={
                **os.environ,
                **env,
                "TUBEFLOW_ACK_WAIT": "45",
                "TUBEFLOW_DECLARE": "false",
                "TUBEFLOW_HEALTH_PORT": str(port),
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        wait_ready(base)
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{base}/readyz").status_code == 200
        metrics = httpx.get(f"{base}/metrics").text
        assert 'tubeflow_work_in_flight{service="downloader"} 0.0' in metrics
        assert httpx.get(f"{base}/nope").status_code == 404
        server.stop()  # NATS away: not ready, still alive
        for _ in range(100):
            if httpx.get(f"{base}/readyz").status_code == 503:
                break
            time.sleep(0.05)
        assert httpx.get(f"{base}/readyz").status_code == 503
        assert httpx.get(f"{base}/healthz").status_code == 200
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        server.stop()
