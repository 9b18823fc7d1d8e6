"""Produced files, with Range, never outside the media root."""

from __future__ import annotations

from typing import Annotated

from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, HeaderParameter

from contracts.ids import is_job_id
from services.api.errors import error_responses
from services.api.hub import JobHub
from services.api.media import media_response, resolve_media
from services.api.ownership import check_job, owner_filter
from services.api.reads import JobReads
from services.runtime.settings import Settings


@get(
    "/media/{path:path}",
    summary="A produced file (Range supported)",
    tags=["media"],
    media_type="application/octet-stream",
    responses=error_responses(400, 401, 404, 416),
)
async def get_media(
    request: Request,
    path: FromPath[str],
    settings: NamedDependency[Settings],
    reads: NamedDependency[JobReads],
    hub: NamedDependency[JobHub],
    byte_range: Annotated[
        str | None,
        HeaderParameter(
            name="Range", max_length=200, description="one byte range, e.g. `bytes=0-1023` or `bytes=-500`"
        ),
    ] = None,
) -> Response:
    if owner_filter(request) is not None:
        # A user's files are in their jobs' folders (`<job id>/…`); anything else is an admin's to read.
        job_id = path.lstrip("/").split("/", 1)[0]
        if not is_job_id(job_id):
            raise NotFoundException("no such file")
        await check_job(request, hub, reads, job_id)
    target = resolve_media(settings.media_dir, path)
    return media_response(target, byte_range)
