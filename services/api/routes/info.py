"""Versions: tubeflow's, yt-dlp's (and how old it is: sites change, and an old yt-dlp is the usual reason a site
stops working), ffmpeg's and the NATS server's; and what the downloaders' engines can do on real sites (the JS
runtime, the solver scripts, impersonation, the PO-token provider), with the problems `tubeflow doctor` names."""

from __future__ import annotations

import asyncio
import functools
from datetime import date, datetime, timezone
from importlib.metadata import PackageNotFoundError, version

from litestar import get
from litestar.di import NamedDependency
from nats.aio.client import Client as NATS
from pydantic import BaseModel, Field

from contracts.engine import STALE_YTDLP_DAYS, EngineFacts
from services.api.engine import EngineBook
from services.api.queue import QueueControl
from services.engine.versions import in_force


class Info(BaseModel):
    tubeflow: str
    yt_dlp: str = Field(description="the yt-dlp version in force (an update at run time, else the bundled one)")
    yt_dlp_bundled: str | None = Field(default=None, description="the yt-dlp tubeflow was installed with")
    yt_dlp_running: dict[str, str] = Field(
        default_factory=dict, description="the version each downloader process runs new downloads on (heartbeats)"
    )
    yt_dlp_released: date | None = Field(description="the date in yt-dlp's version (they are dated releases)")
    yt_dlp_age_days: int | None
    yt_dlp_stale: bool = Field(description=f"older than {STALE_YTDLP_DAYS} days: update it (README: Updating yt-dlp)")
    ffmpeg: str | None
    nats_server: str | None
    engine: EngineFacts | None = Field(
        default=None, description="what the downloader that reported last can do on real sites (None: none yet)"
    )
    engines: int = Field(default=0, description="downloader processes that reported in the last minutes")
    problems: list[str] = Field(
        default_factory=list, description="what real sites need and a downloader lacks, each with what to do"
    )


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def released(ytdlp_version: str) -> date | None:
    """yt-dlp's versions are dates: 2026.10.26 (or 2026.10.26.123456 for nightlies)."""
    try:
        year, month, day = (int(part) for part in ytdlp_version.split(".")[:3])
        return date(year, month, day)
    except ValueError:
        return None


@functools.lru_cache(maxsize=1)
def _ffmpeg() -> str | None:
    import imageio_ffmpeg

    try:
        return imageio_ffmpeg.get_ffmpeg_version()
    except Exception:  # noqa: BLE001 - a missing binary is an answer, not an error
        return None


@get("/api/info", summary="Versions of tubeflow, yt-dlp (and its age), ffmpeg and the NATS server", tags=["health"])
async def info(
    nc: NamedDependency[NATS], engines: NamedDependency[EngineBook], queue: NamedDependency[QueueControl]
) -> Info:
    bundled = _version("yt-dlp")
    current = await in_force(queue.js)
    ytdlp = current.version if current is not None else bundled
    running = {w.worker: w.engine for w in await queue.worker_states() if w.engine}
    day = released(ytdlp)
    age = (datetime.now(timezone.utc).date() - day).days if day else None
    server = getattr(nc, "_server_info", {}) or {}
    found = await engines.all()
    today = datetime.now(timezone.utc).date()
    problems = list(dict.fromkeys(problem for facts in found for problem in facts.problems(today)))
    return Info(
        engine=found[0] if found else None,
        engines=len(found),
        problems=problems,
        tubeflow=_version("tubeflow"),
        yt_dlp=ytdlp,
        yt_dlp_bundled=bundled,
        yt_dlp_running=running,
        yt_dlp_released=day,
        yt_dlp_age_days=age,
        yt_dlp_stale=age is not None and age > STALE_YTDLP_DAYS,
        ffmpeg=await asyncio.to_thread(_ffmpeg),
        nats_server=server.get("version"),
    )


ROUTES = [info]
