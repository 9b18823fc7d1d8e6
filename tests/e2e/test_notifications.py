"""Notifications (issue 16): a finished job is announced once to a webhook, signed, retried until accepted, with the
same delivery id, its files as paths and media URLs; a subscription's new entries are one `subscription.new_items`
delivery; Apprise (a local json:// receiver) gets a short message for each, once across two notifier replicas; a
target outside the address policy is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import httpx
import pytest

from services.notifier.signing import verify
from services.runtime.embedded import EmbeddedNats
from tests.conftest import free_port, spawn_cli, wait_ready
from tests.support.processes import stop_all
from tests.support.receivers import Loopback

pytestmark = pytest.mark.e2e


class AppriseReceiver:
    """What Apprise's json:// sends: {"title", "message", "type", …} POSTed as JSON."""

    def __init__(self) -> None:
        self.messages: list[dict] = []

        def handle(method: str, path: str, headers: dict, body: bytes) -> tuple[int, str, bytes]:
            self.messages.append(json.loads(body))
            return 200, "text/plain", b""

        self.server = Loopback(handle)
        self.url = self.server.base.replace("http://", "json://") + "/apprise"


class Receiver:
    """A webhook receiver on loopback that checks signatures, fails the first ``failures`` requests, then accepts."""

    def __init__(self, secret: str, failures: int) -> None:
        self.secret, self.failures = secret, failures
        self.requests: list[dict] = []

        def handle(method: str, path: str, headers: dict, body: bytes) -> tuple[int, str, bytes]:
            valid = verify(
                self.secret, headers["X-Tubeflow-Timestamp"], body, headers["X-Tubeflow-Signature"], now=time.time()
            )
            self.requests.append({"delivery": headers["X-Tubeflow-Delivery"], "valid": valid, "body": json.loads(body)})
            return (500 if len(self.requests) <= self.failures else 200), "text/plain", b""

        self.server = Loopback(handle)
        self.url = f"{self.server.base}/hook"


def test_a_finished_job_is_delivered_once_signed_and_retried_with_one_delivery_id(tmp_path, media):
    server = EmbeddedNats(tmp_path / "nats")
    url = server.start()
    port = free_port()
    apprise = AppriseReceiver()
    env = {**os.environ, "TUBEFLOW_NATS_URL": url, "TUBEFLOW_DATA_DIR": str(tmp_path / "data"),
           "TUBEFLOW_ALLOWED_NETWORKS": "127.0.0.0/8", "TUBEFLOW_WEBHOOK_RETRY_DELAY": "0.5",
           "TUBEFLOW_PUBLIC_URL": f"http://127.0.0.1:{port}", "TUBEFLOW_APPRISE_URLS": apprise.url,
           "TUBEFLOW_SUBSCRIPTION_MIN_INTERVAL": "1"}  # fmt: skip
    log = tmp_path / "services.log"
    processes: list[subprocess.Popen] = [
        spawn_cli("service", name, env=env, log=log) for name in ("downloader", "progress", "scheduler")
    ]
    notifiers = [spawn_cli("service", "notifier", env=env, log=log) for _ in range(2)]  # two replicas: one delivery
    processes += notifiers
    processes.append(spawn_cli("service", "api", "--port", str(port), env=env, log=log))
    base = f"http://127.0.0.1:{port}"
    receiver = Receiver("a-secret-of-sixteen-chars", failures=2)
    batch = Receiver("another-secret-of-16-chars", failures=0)
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
        # The job's file, relative to the media root, and where the API serves it.
        [made_file] = body["job"]["files"]
        assert made_file["path"].startswith(job["id"] + "/") and made_file["path"].endswith(".mp4")
        assert made_file["url"] == f"{base}/media/{made_file['path']}"
        assert httpx.get(made_file["url"]).content == (tmp_path / "data" / "media" / made_file["path"]).read_bytes()
        log_ = httpx.get(f"{base}/api/webhooks/{hook['id']}/deliveries").json()
        assert [(d["status"], d["attempts"]) for d in log_] == [("delivered", 3)]
        assert log_[0]["created_at"].endswith("Z") and log_[0]["delivered_at"] >= log_[0]["created_at"]  # ISO 8601

        # A subscription's first check makes two jobs: one `subscription.new_items` delivery naming both.
        made = httpx.post(
            f"{base}/api/webhooks",
            json={"url": batch.url, "events": ["subscription.new_items"], "secret": batch.secret},
        )
        assert made.status_code == 201, made.text
        feed = media.feed_url(f"{media.fresh('clip2.mp4')},{media.fresh('clip3.mp4')}")
        sub = httpx.post(f"{base}/api/subscriptions", json={"url": feed, "interval": "1h", "name": "two clips"})
        assert sub.status_code == 201, sub.text
        deadline = time.monotonic() + 60
        while not batch.requests:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        time.sleep(2.0)
        assert len(batch.requests) == 1 and batch.requests[0]["valid"]
        sent = batch.requests[0]["body"]
        assert sent["event"] == "subscription.new_items" and sent["subscription"]["name"] == "two clips"
        assert len(sent["items"]) == 2 and all(i["job_id"] for i in sent["items"])

        # Apprise: one message per finished job (three: the first and the subscription's two) and one per batch,
        # though two notifiers run.
        def apprise_titles() -> list[str]:
            return sorted(m["title"] for m in apprise.messages)

        deadline = time.monotonic() + 60
        while len(apprise.messages) < 4:
            assert time.monotonic() < deadline, (apprise_titles(), log.read_text()[-3000:])
            time.sleep(0.2)
        time.sleep(2.0)
        titles = apprise_titles()
        assert len(titles) == 4, titles
        assert sum(t.startswith("tubeflow: completed") for t in titles) == 3, titles
        assert any(t == "tubeflow: 2 new from two clips" for t in titles), titles

        # The subscription's two jobs finished too: the first webhook asked for job.completed.
        deadline = time.monotonic() + 60
        while len(receiver.requests) < 5:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        sent = (len(receiver.requests), len(batch.requests), len(apprise.messages))
        assert sent == (5, 1, 4)

        # Both notifiers die (one killed outright) and a new one starts: it reads every finished job and check
        # again, and sends nothing a second time.
        notifiers[0].send_signal(signal.SIGKILL)
        notifiers[1].terminate()
        for process in notifiers:
            process.wait(20)
        processes.append(spawn_cli("service", "notifier", env=env, log=log))
        time.sleep(6.0)  # it has read them all by now (well under a second here)
        assert (len(receiver.requests), len(batch.requests), len(apprise.messages)) == sent
        # …and it is alive: the next finished job is announced, once.
        job = httpx.post(f"{base}/api/jobs", json={"url": media.url(media.fresh("clip1.mp4"))}).json()
        deadline = time.monotonic() + 60
        while len(receiver.requests) < 6 or len(apprise.messages) < 5:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        time.sleep(1.0)
        assert receiver.requests[-1]["body"]["job"]["id"] == job["id"] and len(receiver.requests) == 6
        assert len(apprise.messages) == 5
    finally:
        batch.server.close()
        apprise.server.close()
        receiver.server.close()
        stop_all(processes, grace=20)
        server.stop()
