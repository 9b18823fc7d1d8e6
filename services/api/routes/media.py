"""Produced files, with Range, never outside the media root."""

from __future__ import annotations

from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from services.api.errors import error_responses
from services.api.media import media_response, resolve_media
from services.runtime.settings import Settings


@get(
    "/media/{path:path}",
    summary="A produced file (Range supported)",
    tags=["media"],
    media_type="application/octet-stream",
    responses=error_responses(401, 404, 416),
)
async def get_media(path: FromPath[str], request: Request, settings: NamedDependency[Settings]) -> Response:
    target = resolve_media(settings.media_dir, path)
    return media_response(target, request.headers.get("range"))
