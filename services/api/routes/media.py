"""Produced files, with Range, never outside the media root."""

from __future__ import annotations

from typing import Annotated

from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, HeaderParameter, Parameter

from contracts.ids import is_job_id
from contracts.items import view_files
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
    responses=error_responses(400, 401, 404, 416, 422),
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
    job: Annotated[
        str | None,
        Parameter(max_length=40, description="the job whose file this is, for one outside the job's folder"),
    ] = None,
) -> Response:
    if owner_filter(request) is not None:
        # A person's files are in their jobs' folders (`<job id>/…`), or, placed elsewhere by an output folder, read
        # naming their job (`?job=`): one of its files. Anything else is an admin's to read.
        relative = path.lstrip("/")
        job_id = relative.split("/", 1)[0]
        if is_job_id(job_id):
            await check_job(request, hub, reads, job_id)
        elif job is not None and is_job_id(job):
            await check_job(request, hub, reads, job)
            view = await reads.get(job)
            if view is None or relative not in view_files(view):
                raise NotFoundException("no such file")
        else:
            raise NotFoundException("no such file")
    target = resolve_media(settings.media_dir, path)
    return media_response(target, byte_range)
