"""The web page: one HTML document and its static ES module and stylesheet."""

from __future__ import annotations

from pathlib import Path

from litestar import Response, get
from litestar.static_files import create_static_files_router

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


@get("/", media_type="text/html", include_in_schema=False)
async def index() -> Response[bytes]:
    return Response(
        (STATIC_DIR / "index.html").read_bytes(), media_type="text/html", headers={"Cache-Control": "no-cache"}
    )


ROUTES = [index, create_static_files_router(path="/static", directories=[STATIC_DIR], include_in_schema=False)]
