"""The page's Library (issue 30): finished files to browse and play, grouped by show (a library layout's
``Shows/<Show>/Season …``) or folder, newest first, each with its thumbnail and subtitles when tubeflow wrote them."""

from __future__ import annotations

import asyncio
import posixpath
from datetime import datetime
from typing import Annotated, Literal

from litestar import Request, get
from litestar.di import NamedDependency
from litestar.params import Parameter
from pydantic import BaseModel, Field

from contracts.ids import is_job_id
from contracts.library import DEFAULT_FOLDERS
from services.api.errors import error_responses
from services.api.hub import JobHub
from services.api.ownership import owner_filter
from services.api.reads import JobReads

AUDIO = frozenset({"mp3", "m4a", "opus", "ogg", "flac", "wav", "aac"})
IMAGES = (".jpg", ".jpeg", ".png", ".webp")
MAX_LIBRARY = 500


class LibraryItem(BaseModel):
    job_id: str
    item_id: str
    title: str
    file: str = Field(description="relative to the media root (GET /media/{file}; a person adds ?job= outside the "
                      "job's folder)")  # fmt: skip
    kind: Literal["video", "audio"]
    thumb: str | None = None
    subtitles: list[str] = Field(default_factory=list, description="WebVTT files beside it (playable in a browser)")
    size: int | None = None
    duration: float | None = None
    finished_at: datetime | None = None


class LibraryGroup(BaseModel):
    name: str = Field(description="the show, or the folder (Downloads: files in their jobs' own folders)")
    folder: str | None = Field(
        default=None, description="the group's folder under the media root, for its podcast feed (POST /api/feeds)"
    )
    items: list[LibraryItem]


class LibraryView(BaseModel):
    groups: list[LibraryGroup]


def group_of(file: str) -> tuple[str, str | None]:
    """The group a file is shown in, and its folder (None: files in their jobs' own folders)."""
    parts = file.split("/")
    if is_job_id(parts[0].lower()) or len(parts) == 1:
        return "Downloads", None
    shows = parts[:-1]
    for n, part in enumerate(shows):
        if part.startswith("Season ") and n >= 1:
            return shows[n - 1], "/".join(shows[:n])
    if parts[0] == DEFAULT_FOLDERS["music"] and len(parts) >= 3:
        return parts[1], "/".join(parts[:2])
    return posixpath.dirname(file), posixpath.dirname(file)


@get(
    "/api/library",
    summary="Finished files to browse and play, by show or folder",
    tags=["library"],
    responses=error_responses(401, 422),
)
async def get_library(
    request: Request,
    hub: NamedDependency[JobHub],
    reads: NamedDependency[JobReads],
    q: Annotated[str | None, Parameter(max_length=200, description="in the title or URL, any case")] = None,
    limit: Annotated[int, Parameter(ge=1, le=MAX_LIBRARY, description="jobs looked at, newest finished first")] = 200,
) -> LibraryView:
    owner = owner_filter(request)
    summaries = []
    for status in ("completed", "partial"):
        found, _ = hub.index.page(limit=limit, status=status, q=q, sort="finished", owner=owner)
        summaries += found
    summaries.sort(key=lambda s: s.finished_at or s.created_at, reverse=True)
    views = await asyncio.gather(*(reads.get(s.id) for s in summaries[:limit]))
    groups: dict[str, list[LibraryItem]] = {}
    folders: dict[str, str | None] = {}
    for view in views:
        if view is None or view.deleted_at is not None:
            continue
        for item in view.items:
            main = item.extract.file or item.download.file
            if item.status != "completed" or not main:
                continue
            beside = [f for f in (item.download.file, *item.download.files, item.extract.file) if f]
            ext = main.rsplit(".", 1)[-1].lower()
            name, folders[name] = group_of(main)
            groups.setdefault(name, []).append(
                LibraryItem(
                    job_id=view.id,
                    item_id=item.id,
                    title=item.title or view.title or posixpath.basename(main),
                    file=main,
                    kind="audio" if ext in AUDIO else "video",
                    thumb=next((f for f in beside if f.lower().endswith(IMAGES)), None),
                    subtitles=[f for f in beside if f.lower().endswith(".vtt")],
                    size=item.extract.size if item.extract.file else item.download.size,
                    duration=item.download.chosen.duration if item.download.chosen else None,
                    finished_at=view.finished_at,
                )
            )
    return LibraryView(
        groups=[LibraryGroup(name=name, folder=folders[name], items=items) for name, items in groups.items()]
    )


ROUTES = [get_library]
