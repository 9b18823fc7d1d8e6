"""Download a job's files to the device: one ZIP streamed as it is made (stream-zip), never built in memory or on
disk; media is stored, not compressed again (deflate level 0: a stored block stream, so no size is needed up front)."""

from __future__ import annotations

import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import AsyncIterator

import anyio
from litestar import Request, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Stream

from contracts.items import view_files
from contracts.views import JobView
from services.api.errors import error_responses
from services.api.ownership import may_see
from services.api.reads import JobReads
from services.runtime.settings import Settings

CHUNK = 256 * 1024


def job_files(view: JobView, media_dir: Path) -> list[tuple[str, Path]]:
    """(name in the archive, file) for every file of the job still on disk: downloads, the files made beside them,
    extracted audio. Names are relative to the job's folder (or the folder the job named), made unique."""
    root = media_dir.resolve()
    seen: set[str] = set()
    out = []
    for relative in view_files(view):
        path = (root / relative).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            continue
        name = relative.removeprefix(f"{view.id}/")
        stem, dot, ext = name.rpartition(".") if "." in name else (name, "", "")
        n = 1
        while name in seen:
            n += 1
            name = f"{stem} ({n}){dot}{ext}"
        if (path, name) not in out:
            seen.add(name)
            out.append((name, path))
    return out


async def _members(files: list[tuple[str, Path]], zip64: object) -> AsyncIterator[tuple]:
    for name, path in files:
        stat = path.stat()
        modified = datetime.fromtimestamp(stat.st_mtime, timezone.utc)
        yield name, modified, 0o644, zip64, _chunks(path)


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as source:
        while chunk := await source.read(CHUNK):
            yield chunk


@get(
    "/api/jobs/{job_id:str}/archive.zip",
    summary="Every file of a job as one ZIP, streamed",
    description="Downloads, subtitles, thumbnails and extracted audio, named as in the job's folder. Streamed while it "
    "is made: no Content-Length, no Range. 404 when the job has no file (yet).",
    tags=["jobs"],
    responses=error_responses(401, 404),
    media_type="application/zip",
)
async def job_archive(
    request: Request, job_id: FromPath[str], reads: NamedDependency[JobReads], settings: NamedDependency[Settings]
) -> Stream:
    view = await reads.get(job_id)
    if view is None or not may_see(request, view.owner):
        raise NotFoundException(f"no job {job_id}")
    files = await anyio.to_thread.run_sync(job_files, view, settings.media_dir)
    if not files:
        raise NotFoundException(f"job {job_id} has no files (yet)")
    # stream-zip and pycryptodome (~12 MiB) imported by the first archive asked for, not by every API process
    from stream_zip import ZIP_64, async_stream_zip

    body = async_stream_zip(
        _members(files, ZIP_64),
        chunk_size=CHUNK,
        get_compressobj=lambda: zlib.compressobj(level=0, wbits=-zlib.MAX_WBITS),
    )
    name = f"tubeflow-{job_id}.zip"
    return Stream(body, media_type="application/zip", headers={"Content-Disposition": f'attachment; filename="{name}"'})


ROUTES = [job_archive]
