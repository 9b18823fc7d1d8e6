"""Produced files, with Range, never outside the media root."""

from __future__ import annotations

from typing import Annotated

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter

from services.api.errors import error_responses
from services.api.media import media_response, resolve_media
from services.runtime.settings import Settings


@get(
    "/media/{path:path}",
    summary="A produced file (Range supported)",
    tags=["media"],
    media_type="application/octet-stream",
    responses=error_responses(400, 401, 404, 416),
)
async def get_media(
    path: FromPath[str],
    settings: NamedDependency[Settings],
    byte_range: Annotated[
        str | None,
        HeaderParameter(
            name="Range", max_length=200, description="one byte range, e.g. `bytes=0-1023` or `bytes=-500`"
        ),
    ] = None,
) -> Response:
    target = resolve_media(settings.media_dir, path)
    return media_response(target, byte_range)
