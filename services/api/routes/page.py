"""The web page: one HTML document and its static ES module and stylesheet; a help page, the web app manifest, and
`/share` where shared links arrive."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlencode

from litestar import Response, get
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


@get("/", media_type="text/html", include_in_schema=False)
async def index() -> Response[bytes]:
    return _page("index.html")


def _page(name: str) -> Response[bytes]:
    return Response((STATIC_DIR / name).read_bytes(), media_type="text/html", headers={"Cache-Control": "no-cache"})


@get("/help", media_type="text/html", include_in_schema=False)
async def help_page() -> Response[bytes]:
    """How to send links to tubeflow: the bookmarklet, the phone's share sheet, the queue."""
    return _page("help.html")


@get("/manifest.webmanifest", include_in_schema=False)
async def manifest() -> Response[bytes]:
    return Response(
        (STATIC_DIR / "manifest.webmanifest").read_bytes(),
        media_type="application/manifest+json",
        headers={"Cache-Control": "no-cache"},
    )


_LINK = re.compile(r"https?://[^\s<>\"']+")


@get("/share", include_in_schema=False, status_code=303)
async def share(url: str | None = None, text: str | None = None, title: str | None = None) -> Redirect:
    """The phone's share sheet and the bookmarklet land here: the page opens with the shared link in its box (phones
    often put the link in ``text``). Nothing is submitted by a GET."""
    for value in (url, text, title):
        found = _LINK.search((value or "")[:4096])
        if found:
            return Redirect(f"/?{urlencode({'url': found.group(0)[:2048]})}", status_code=303)
    return Redirect("/", status_code=303)


ROUTES = [
    index,
    help_page,
    manifest,
    share,
    create_static_files_router(path="/static", directories=[STATIC_DIR], include_in_schema=False),
]
