"""Media servers told to scan the folders where files landed (issue 30): Jellyfin (or Emby), Plex, Kodi.

A finished job whose files are outside its own folder (a library layout, an output folder) adds those folders to the
scan request of the current window (TUBEFLOW_LIBRARY_REFRESH_DELAY seconds) for each configured server: one record
per server and window in the deliveries bucket (``library.<server>.<window>``), created by the first replica and
extended by compare-and-set, so that replicas ask once per window together. The request goes out when the window is
over (so a batch is one request), is retried like a webhook delivery (doubling from TUBEFLOW_WEBHOOK_RETRY_DELAY, for
24 h), and never holds anything else up. The servers are the operator's (their addresses may be private ones the
address policy refuses to strangers' URLs): they are not checked against it.

- Jellyfin/Emby: ``POST /Library/Media/Updated`` with ``{"Updates": [{"Path", "UpdateType": "Modified"}]}`` and the
  key in ``X-Emby-Token``: it scans those paths.
- Plex: ``GET /library/sections/<section>/refresh?path=<folder>`` with ``X-Plex-Token`` (a partial scan of each
  folder); without TUBEFLOW_PLEX_SECTION, ``GET /library/sections/all/refresh``.
- Kodi: JSON-RPC ``VideoLibrary.Scan`` with ``{"directory": <folder>/}`` per folder (``AudioLibrary.Scan`` for a
  music folder), user and password from the URL as basic auth.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from contracts.ids import is_job_id
from contracts.library import DEFAULT_FOLDERS

MAX_PATHS = 200
LIBRARY_PREFIX = "library"


class RefreshFailed(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class MediaServer:
    name: str  # jellyfin, plex, kodi
    url: str
    secret: str | None = None
    section: str | None = None

    async def refresh(self, client: httpx.AsyncClient, paths: list[str]) -> int:
        """Ask for a scan of ``paths`` (as the server sees them); the answer's status (RefreshFailed otherwise)."""
        base = self.url.rstrip("/")
        if self.name == "jellyfin":
            body = {"Updates": [{"Path": path, "UpdateType": "Modified"} for path in paths]}
            return _ok(
                await client.post(
                    f"{base}/Library/Media/Updated", json=body, headers={"X-Emby-Token": self.secret or ""}
                )
            )
        if self.name == "plex":
            token = {"X-Plex-Token": self.secret or ""}
            if not self.section:
                return _ok(await client.get(f"{base}/library/sections/all/refresh", headers=token))
            status = 0
            for path in paths:
                status = _ok(
                    await client.get(f"{base}/library/sections/{quote(self.section)}/refresh", params={"path": path},
                                     headers=token)
                )  # fmt: skip
            return status
        parts = urlsplit(self.url)
        auth = (parts.username or "", parts.password or "") if parts.username else None
        plain = urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))  # type: ignore[operator]
        status = 0
        for n, path in enumerate(paths, start=1):
            music = f"/{DEFAULT_FOLDERS['music']}/" in f"/{path}/"
            call = {
                "jsonrpc": "2.0",
                "method": "AudioLibrary.Scan" if music else "VideoLibrary.Scan",
                "params": {"directory": path.rstrip("/") + "/", "showdialogs": False},
                "id": n,
            }
            answer = await client.post(plain, json=call, auth=auth)  # type: ignore[arg-type]
            status = _ok(answer)
            try:
                error = answer.json().get("error")
            except ValueError:
                error = None
            if error:
                raise RefreshFailed(f"Kodi answered {str(error)[:200]}", status)
        return status


def _ok(answer: httpx.Response) -> int:
    if not 200 <= answer.status_code < 300:
        raise RefreshFailed(f"HTTP {answer.status_code}", answer.status_code)
    return answer.status_code


def media_servers(settings: Any) -> list[MediaServer]:
    servers = []
    if settings.jellyfin_url:
        key = settings.jellyfin_api_key.get_secret_value() if settings.jellyfin_api_key else None
        servers.append(MediaServer("jellyfin", settings.jellyfin_url, key))
    if settings.plex_url:
        token = settings.plex_token.get_secret_value() if settings.plex_token else None
        servers.append(MediaServer("plex", settings.plex_url, token, settings.plex_section))
    if settings.kodi_url:
        servers.append(MediaServer("kodi", settings.kodi_url))
    return servers


def landed_folders(files: list[str]) -> list[str]:
    """The folders (relative to the media root) of a job's files outside its own folder, each once."""
    out: dict[str, None] = {}
    for relative in files:
        head = relative.split("/", 1)[0]
        if "/" in relative and not is_job_id(head.lower()):
            out.setdefault(posixpath.dirname(relative), None)
    return list(out)


def server_path(root: str, relative: str) -> str:
    return posixpath.join(root.rstrip("/") or "/", relative)
