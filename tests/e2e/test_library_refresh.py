"""Media servers told to scan where files landed (issue 30): fake Jellyfin, Plex and Kodi endpoints on loopback record
exactly the documented calls; three jobs finishing together are one request per server across two notifier replicas;
a server answering 500 is asked again."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from bench.harness import nats_server, tubeflow
from tests.support.processes import wait_for

pytestmark = pytest.mark.e2e


class FakeServers:
    """Jellyfin at /jellyfin, Plex at /plex, Kodi at /kodi/jsonrpc: every request recorded (method, path, query,
    headers, JSON body); Plex answers 500 to its first request."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.plex_failures = 1
        fakes = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                url = urlsplit(self.path)
                call = {
                    "method": self.command,
                    "path": url.path,
                    "query": parse_qs(url.query),
                    "headers": dict(self.headers),
                    "body": body,
                    "at": time.monotonic(),
                }
                status = 200
                if url.path.startswith("/plex") and fakes.plex_failures > 0:
                    fakes.plex_failures -= 1
                    status = 500
                call["status"] = status
                fakes.calls.append(call)
                answer = json.dumps({"jsonrpc": "2.0", "id": (body or {}).get("id"), "result": "OK"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, prefix: str) -> list[dict]:
        return [c for c in self.calls if c["path"].startswith(prefix)]


def test_three_jobs_landing_together_are_one_scan_request_per_server_across_two_notifiers(media):
    fakes = FakeServers()
    env = {
        "TUBEFLOW_JELLYFIN_URL": f"{fakes.base}/jellyfin",
        "TUBEFLOW_JELLYFIN_API_KEY": "jf-key",
        "TUBEFLOW_PLEX_URL": f"{fakes.base}/plex",
        "TUBEFLOW_PLEX_TOKEN": "plex-token",
        "TUBEFLOW_PLEX_SECTION": "3",
        "TUBEFLOW_KODI_URL": fakes.base.replace("http://", "http://kodi:secret@") + "/kodi/jsonrpc",
        "TUBEFLOW_LIBRARY_PATH": "/srv/media",
        "TUBEFLOW_LIBRARY_REFRESH_DELAY": "6",
        "TUBEFLOW_WEBHOOK_RETRY_DELAY": "1",
    }
    services = ["api", "progress", "downloader", "notifier", "notifier"]
    try:
        with nats_server() as nats, tubeflow(nats.url, services, env) as stack:
            jobs = [
                httpx.post(
                    f"{stack.base}/api/jobs",
                    json={"url": media.url(media.fresh("clip2.mp4")), "library": {"kind": "show", "show": "Refreshed"}},
                    timeout=10,
                ).json()["id"]
                for _ in range(3)
            ]
            for job in jobs:
                wait_for(
                    lambda job=job: (
                        httpx.get(f"{stack.base}/api/jobs/{job}", timeout=10).json()["status"] == "completed"
                    ),
                    60,
                    f"job {job}",
                )
            wait_for(lambda: any(c["status"] == 200 for c in fakes.of("/plex")), 30, "Plex asked again after its 500")
            wait_for(lambda: fakes.of("/jellyfin") and fakes.of("/kodi"), 30, "Jellyfin and Kodi asked")
            time.sleep(7)  # a window more: nothing else comes
    finally:
        fakes.server.shutdown()
    season = f"/srv/media/Shows/Refreshed/Season {time.gmtime().tm_year}"
    jellyfin, plex, kodi = fakes.of("/jellyfin"), fakes.of("/plex"), fakes.of("/kodi")
    # One request per server and window, not one per job or per notifier (the three may straddle two windows).
    assert 1 <= len(jellyfin) <= 2, jellyfin
    for call in jellyfin:
        assert call["method"] == "POST" and call["path"] == "/jellyfin/Library/Media/Updated"
        assert call["headers"]["X-Emby-Token"] == "jf-key"
        assert call["body"] == {"Updates": [{"Path": season, "UpdateType": "Modified"}]}
    for call in plex:
        assert call["method"] == "GET" and call["path"] == "/plex/library/sections/3/refresh"
        assert call["query"] == {"path": [season]} and call["headers"]["X-Plex-Token"] == "plex-token"
    assert [c["status"] for c in plex][:2] == [500, 200] and len(plex) <= 3, plex
    assert plex[1]["at"] - plex[0]["at"] >= 0.9  # the retry waited (TUBEFLOW_WEBHOOK_RETRY_DELAY)
    assert 1 <= len(kodi) <= 2, kodi
    for call in kodi:
        assert call["method"] == "POST" and call["path"] == "/kodi/jsonrpc"
        assert call["headers"]["Authorization"].startswith("Basic ")  # kodi:secret
        assert call["body"]["method"] == "VideoLibrary.Scan" and call["body"]["params"]["directory"] == season + "/"


def test_a_media_server_url_that_is_not_http_stops_the_notifier_naming_the_setting():
    import os

    from tests.support.processes import run_cli

    refused = run_cli(
        "service", "notifier", env={**os.environ, "TUBEFLOW_PLEX_URL": "ftp://plex.lan/", "TUBEFLOW_NATS_URL": "nats://127.0.0.1:9"},
        timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2 and "TUBEFLOW_PLEX_URL must be an http(s) URL" in refused.stderr, refused.stderr
