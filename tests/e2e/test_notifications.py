"""Webhooks (issue 16, work in progress): a finished job is announced once, signed, retried until accepted, with the
same delivery id; a target outside the address policy is refused."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from services.notifier.signing import verify
from services.runtime.embedded import EmbeddedNats
from tests.conftest import free_port, spawn_cli, wait_ready

pytestmark = pytest.mark.e2e


class Receiver:
    """A webhook receiver on loopback that checks signatures, fails the first ``failures`` requests, then accepts."""

    def __init__(self, secret: str, failures: int) -> None:
        self.secret, self.failures = secret, failures
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                valid = verify(
                    receiver.secret,
                    self.headers["X-Tubeflow-Timestamp"],
                    body,
                    self.headers["X-Tubeflow-Signature"],
                    now=time.time(),
                )
                receiver.requests.append(
                    {"delivery": self.headers["X-Tubeflow-Delivery"], "valid": valid, "body": json.loads(body)}
                )
                status = 500 if len(receiver.requests) <= receiver.failures else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def test_a_finished_job_is_delivered_once_signed_and_retried_with_one_delivery_id(tmp_path, media):
    server = EmbeddedNats(tmp_path / "nats")
    url = server.start()
    port = free_port()
    env = {**os.environ, "TUBEFLOW_NATS_URL": url, "TUBEFLOW_DATA_DIR": str(tmp_path / "data"),
           "TUBEFLOW_ALLOWED_NETWORKS": "127.0.0.0/8", "TUBEFLOW_WEBHOOK_RETRY_DELAY": "0.5"}  # fmt: skip
    log = tmp_path / "services.log"
    processes: list[subprocess.Popen] = [
        spawn_cli("service", name, env=env, log=log) for name in ("downloader", "progress")
    ]
    processes += [spawn_cli("service", "notifier", env=env, log=log) for _ in range(2)]  # two replicas: one delivery
    processes.append(spawn_cli("service", "api", "--port", str(port), env=env, log=log))
    base = f"http://127.0.0.1:{port}"
    receiver = Receiver("a-secret-of-sixteen-chars", failures=2)
    try:
        wait_ready(base, explain=lambda: log.read_text()[-3000:])
        refused = httpx.post(f"{base}/api/webhooks", json={"url": "http://10.1.2.3/hook", "events": ["job.completed"]})
        assert refused.status_code == 422 and "url" in refused.text
        bad = httpx.post(f"{base}/api/webhooks", json={"url": "ftp://x/", "events": ["job.done"]})
        assert bad.status_code == 422
        made = httpx.post(
            f"{base}/api/webhooks",
            json={"url": receiver.url, "events": ["job.completed", "job.failed"], "secret": receiver.secret},
        )
        assert made.status_code == 201, made.text
        hook = made.json()["webhook"]
        assert "secret" not in httpx.get(f"{base}/api/webhooks").json()[0]
        job = httpx.post(f"{base}/api/jobs", json={"url": media.url(media.fresh("clip1.mp4"))}).json()
        deadline = time.monotonic() + 60
        while not any(r["valid"] for r in receiver.requests[2:]):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        time.sleep(2.0)  # nothing more may come
        assert len(receiver.requests) == 3, receiver.requests
        assert {r["delivery"] for r in receiver.requests} == {receiver.requests[0]["delivery"]}
        assert all(r["valid"] for r in receiver.requests)
        body = receiver.requests[-1]["body"]
        assert body["event"] == "job.completed" and body["job"]["id"] == job["id"]
        log_ = httpx.get(f"{base}/api/webhooks/{hook['id']}/deliveries").json()
        assert [(d["status"], d["attempts"]) for d in log_] == [("delivered", 3)]
    finally:
        receiver.server.shutdown()
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        server.stop()
