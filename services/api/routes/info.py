"""Versions: tubeflow's, yt-dlp's (and how old it is: sites change, and an old yt-dlp is the usual reason a site
stops working), ffmpeg's and the NATS server's."""

from __future__ import annotations

import asyncio
import functools
from datetime import date, datetime, timezone
from importlib.metadata import PackageNotFoundError, version

from litestar import get
from litestar.di import NamedDependency
from nats.aio.client import Client as NATS
from pydantic import BaseModel, Field

# The page warns when yt-dlp is older than this.
STALE_YTDLP_DAYS = 60


class Info(BaseModel):
    tubeflow: str
    yt_dlp: str
    yt_dlp_released: date | None = Field(description="the date in yt-dlp's version (they are dated releases)")
    yt_dlp_age_days: int | None
    yt_dlp_stale: bool = Field(description=f"older than {STALE_YTDLP_DAYS} days: update it (README: Updating yt-dlp)")
    ffmpeg: str | None
    nats_server: str | None


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
async def info(nc: NamedDependency[NATS]) -> Info:
    ytdlp = _version("yt-dlp")
    day = released(ytdlp)
    age = (datetime.now(timezone.utc).date() - day).days if day else None
    server = getattr(nc, "_server_info", {}) or {}
    return Info(
        tubeflow=_version("tubeflow"),
        yt_dlp=ytdlp,
        yt_dlp_released=day,
        yt_dlp_age_days=age,
        yt_dlp_stale=age is not None and age > STALE_YTDLP_DAYS,
        ffmpeg=await asyncio.to_thread(_ffmpeg),
        nats_server=server.get("version"),
    )


ROUTES = [info]
