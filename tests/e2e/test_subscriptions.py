"""Subscriptions (issue 16): a feed that grows between checks becomes exactly one job per new entry, downloaded once,
with two scheduler processes running; the leader SIGKILLed is replaced within its lease; bad input is a 422 naming
the field, and a source that is one video pauses its subscription with `not_a_playlist`."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from xml.sax.saxutils import escape

import httpx
import pytest

from services.runtime.embedded import EmbeddedNats
from tests.conftest import ROOT, free_port, spawn_cli, wait_ready
from tests.support.processes import stop_all, wait_for
from tests.support.receivers import Loopback

pytestmark = pytest.mark.e2e


class Feed:
    """An RSS feed on loopback whose entries the test adds to between checks."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, str]] = []  # (guid, title, enclosure URL)
        self.requests = 0

        def handle(method: str, path: str, headers: dict, body: bytes) -> tuple[int, str, bytes]:
            self.requests += 1
            items = "".join(
                f"<item><title>{escape(title)}</title><guid>{escape(guid)}</guid>"
                f'<enclosure url="{escape(url)}" type="video/mp4" length="1"/></item>'
                for guid, title, url in reversed(self.entries)  # newest first, as feeds are
            )
            feed = (
                '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>Growing feed</title>'
                f"<link>http://127.0.0.1/</link><description>d</description>{items}</channel></rss>"
            )
            return 200, "application/rss+xml", feed.encode()

        self.server = Loopback(handle)
        self.url = f"{self.server.base}/feed.xml"


def test_a_growing_feed_becomes_one_job_per_new_entry_across_two_schedulers_and_a_killed_leader(tmp_path, media):
    server = EmbeddedNats(tmp_path / "nats")
    url = server.start()
    port = free_port()
    env = {**os.environ, "TUBEFLOW_NATS_URL": url, "TUBEFLOW_DATA_DIR": str(tmp_path / "data"),
           "TUBEFLOW_ALLOWED_NETWORKS": "127.0.0.0/8", "TUBEFLOW_SUBSCRIPTION_MIN_INTERVAL": "2",
           "TUBEFLOW_SCHEDULER_LEASE": "3", "TUBEFLOW_RATE_LIMIT": "0"}  # fmt: skip
    log = tmp_path / "services.log"
    processes: list[subprocess.Popen] = [
        spawn_cli("service", name, env=env, log=log) for name in ("downloader", "progress")
    ]
    schedulers = {
        name: spawn_cli("service", "scheduler", env={**env, "TUBEFLOW_WORKER_NAME": name}, log=log)
        for name in ("scheduler-a", "scheduler-b")
    }
    processes += schedulers.values()
    processes.append(spawn_cli("service", "api", "--port", str(port), env=env, log=log))
    base = f"http://127.0.0.1:{port}"
    feed = Feed()
    explain = lambda: log.read_text()[-4000:]  # noqa: E731

    def add(n: int, url: str | None = None) -> None:
        feed.entries.append((f"episode-{n}", f"Episode {n}", url or media.url(media.fresh("clip1.mp4"))))

    def jobs() -> list[dict]:
        return httpx.get(f"{base}/api/jobs", params={"limit": 500}).json()["jobs"]

    try:
        wait_ready(base, explain=explain)
        # Bad input: 422 naming the field.
        for body, field in (
            ({"url": feed.url, "interval": "1s"}, "interval"),
            ({"url": feed.url, "interval": "soon"}, "interval"),
            ({"url": feed.url, "title_filter": {"include": ["[abc"]}}, "title_filter"),
            ({"url": "ftp://127.0.0.1/feed"}, "url"),
            ({"url": "http://10.1.2.3/feed.xml"}, "url"),
        ):
            answer = httpx.post(f"{base}/api/subscriptions", json=body)
            assert answer.status_code == 422, (body, answer.text)
            assert any(e["field"].startswith(field) for e in answer.json()["errors"]), (body, answer.text)

        # A source that fails (404) records its error and backs off; it never holds up the others.
        broken = httpx.post(f"{base}/api/subscriptions", json={"url": f"{media.base}/gone/feed.xml", "interval": "2s"})
        assert broken.status_code == 201, broken.text
        broken_id = broken.json()["id"]
        add(1)
        add(2)
        made = httpx.post(
            f"{base}/api/subscriptions",
            json={"url": feed.url, "interval": "2s", "title_filter": {"exclude": ["*trailer*"]}, "name": "growing"},
        )
        assert made.status_code == 201, made.text
        sid = made.json()["id"]
        one = lambda: httpx.get(f"{base}/api/subscriptions/{sid}").json()  # noqa: E731
        wait_for(lambda: one()["new_items"] == 2, 60, "two new entries", explain)
        # Between checks: one new entry, and one the filter leaves out.
        feed.entries.append(("trailer-1", "A TRAILER for season 2", media.url(media.fresh("clip2.mp4"))))
        add(3, media.fresh_stream("dash", "manifest.mpd"))  # what real sites serve: video and audio apart (DASH)
        wait_for(lambda: one()["new_items"] == 3, 60, "the third entry", explain)
        checks = one()["checks"]
        wait_for(lambda: one()["checks"] >= checks + 2, 30, "two more checks", explain)
        view = one()
        assert view["new_items"] == 3 and view["seen"] == 3, view
        assert view["source_title"] == "Growing feed" and view["last_error"] is None

        failing = httpx.get(f"{base}/api/subscriptions/{broken_id}").json()
        assert failing["last_error"]["code"] == "http_404" and failing["new_items"] == 0, failing
        # Tries 2 s, 4 s, 8 s… apart: a few in the time one every 2 s would have made many.
        elapsed = datetime.fromisoformat(failing["last_check_at"]) - datetime.fromisoformat(failing["created_at"])
        assert 1 <= failing["failures"] <= 2 + math.log2(1 + elapsed.total_seconds() / 2), failing
        gap = datetime.fromisoformat(failing["next_check_at"]) - datetime.fromisoformat(failing["last_check_at"])
        assert gap.total_seconds() == 2 * 2 ** (failing["failures"] - 1)
        assert httpx.delete(f"{base}/api/subscriptions/{broken_id}").status_code == 204

        # The leader dies mid-life; the other scheduler takes over within the lease (3 s) and checks on.
        leader = view["last_checked_by"]
        assert leader in schedulers
        schedulers[leader].send_signal(signal.SIGKILL)
        schedulers[leader].wait(10)
        add(4)
        killed_at = time.monotonic()
        wait_for(lambda: one()["new_items"] == 4, 30, "the fourth entry, by the other scheduler", explain)
        view = one()
        assert view["last_checked_by"] != leader
        assert time.monotonic() - killed_at < 3 + 2 + 10  # lease + interval + a check, generously

        # Exactly one job per entry, each downloaded once and completed.
        def finished() -> list[dict] | None:
            found = jobs()
            return found if len(found) >= 4 and all(j["status"] == "completed" for j in found) else None

        found = wait_for(finished, 90, "four completed jobs", explain)
        assert len(found) == 4, [j["url"] for j in found]
        assert sorted(j["url"] for j in found) == sorted(u for g, _, u in feed.entries if g.startswith("episode"))
        # Each job is called what the feed calls its entry, not after its file (issue 23).
        assert sorted(j["title"] for j in found) == [f"Episode {n}" for n in range(1, 5)], [j["title"] for j in found]
        check_now = httpx.post(f"{base}/api/subscriptions/{sid}/check")
        assert check_now.status_code == 202
        checks = one()["checks"]
        wait_for(lambda: one()["checks"] > checks, 10, "the check asked for", explain)
        assert len(jobs()) == 4

        # Pause: no more checks; resume: checks again.
        assert httpx.post(f"{base}/api/subscriptions/{sid}/pause").json()["paused"] is True
        checks, requests = one()["checks"], feed.requests
        time.sleep(4.5)
        assert one()["checks"] == checks and feed.requests == requests and one()["next_check_at"] is None
        assert httpx.post(f"{base}/api/subscriptions/{sid}/resume").status_code == 202
        wait_for(lambda: one()["checks"] > checks, 10, "a check after resume", explain)

        # A source that is one video: created, then paused by its first check with the reason.
        single = httpx.post(f"{base}/api/subscriptions", json={"url": media.url("clip3.mp4"), "interval": "2s"})
        assert single.status_code == 201, single.text
        single_id = single.json()["id"]
        paused = wait_for(
            lambda: (v := httpx.get(f"{base}/api/subscriptions/{single_id}").json())["paused"] and v,
            30,
            "not_a_playlist",
            explain,
        )
        assert paused["paused_reason"] == "not_a_playlist" and paused["last_error"]["code"] == "not_a_playlist"

        # From the command line: the job flags and the filters, created paused; a bad interval names the field.
        def subscribe(*args: str) -> subprocess.CompletedProcess:
            command = [sys.executable, "-m", "services.cli", "subscribe", feed.url, "--api", base, *args]
            return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)

        cli = subscribe("--every", "1h", "--exclude", "*trailer*", "--mode", "audio", "--paused", "--json")
        assert cli.returncode == 0, cli.stderr
        from_cli = json.loads(cli.stdout)
        assert from_cli["paused"] and from_cli["interval"] == 3600 and from_cli["job"]["mode"] == "audio"
        assert from_cli["title_filter"] == {"include": [], "exclude": ["*trailer*"]}
        refused = subscribe("--every", "1s")
        assert refused.returncode == 2 and "interval" in refused.stderr, refused.stderr

        patched = httpx.patch(f"{base}/api/subscriptions/{sid}", json={"interval": "1h", "max_items_per_check": 5})
        assert patched.status_code == 200, patched.text
        assert patched.json()["interval"] == 3600 and patched.json()["max_items_per_check"] == 5
        # A preset replaces the job fields every later job gets; the rest stays.
        patched = httpx.patch(f"{base}/api/subscriptions/{sid}", json={"preset": "audio-mp3"}).json()
        assert patched["job"]["mode"] == "audio" and patched["job"]["preset"] == "audio-mp3", patched
        assert patched["interval"] == 3600 and patched["title_filter"]["exclude"] == ["*trailer*"]
        unknown = httpx.patch(f"{base}/api/subscriptions/{sid}", json={"preset": "no-such-preset"})
        assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "preset"
        assert httpx.delete(f"{base}/api/subscriptions/{sid}").status_code == 204
        assert httpx.get(f"{base}/api/subscriptions/{sid}").status_code == 404
        assert {s["id"] for s in httpx.get(f"{base}/api/subscriptions").json()} == {single_id, from_cli["id"]}
    finally:
        feed.server.close()
        stop_all(processes, grace=20)
        server.stop()
