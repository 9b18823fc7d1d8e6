"""A fake PO-token provider speaking bgutil-ytdlp-pot-provider's HTTP protocol (GET /ping -> {"version"}, POST
/get_pot -> {"poToken", "contentBinding", "expiresAt"}), recording what it is asked; it also serves one media file
(``/clip.mp4``), so a test can show that only the provider's own requests pass the address policy."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path

# base64url, as real tokens are (yt-dlp checks the shape).
TOKEN = "dHViZWZsb3cgZmFrZSBwbyB0b2tlbiBmcm9tIHRoZSB0ZXN0IHByb3ZpZGVy"


class FakePotProvider:
    def __init__(self, host: str = "127.0.0.1", clip: Path | None = None) -> None:
        self.asked: list[dict] = []
        self.paths: list[str] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                provider.paths.append(self.path)
                if self.path == "/ping":
                    self._json(200, {"version": version("bgutil-ytdlp-pot-provider"), "server_uptime": 1.0})
                elif self.path == "/clip.mp4" and clip is not None:
                    data = clip.read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Type", "video/mp4")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                else:
                    self._json(404, {"error": "not found"})

            def do_POST(self) -> None:  # noqa: N802
                provider.paths.append(self.path)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                provider.asked.append(body)
                if self.path != "/get_pot":
                    self._json(404, {"error": "not found"})
                    return
                self._json(
                    200,
                    {
                        "poToken": TOKEN,
                        "contentBinding": body.get("content_binding"),
                        "expiresAt": "2099-01-01T00:00:00Z",
                    },
                )

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> "FakePotProvider":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
