"""What a download may take on disk: the bound of one item (TUBEFLOW_MAX_FILESIZE), of one job (TUBEFLOW_MAX_JOB_BYTES),
the free space under which new downloads wait (TUBEFLOW_MIN_FREE_DISK), and the sweep of old media
(TUBEFLOW_MEDIA_RETENTION_DAYS)."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

from contracts.ids import is_job_id
from services.runtime.failures import MediaError

log = logging.getLogger("tubeflow.disk")


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


@dataclass
class DiskLimits:
    max_filesize: int = 0
    max_job_bytes: int = 0
    min_free_disk: int = 0
    # How often a download waiting for disk space looks again.
    check_every: float = 5.0
    free: Callable[[Path], int] = field(default=free_bytes)
    # Bytes a job's downloads hold so far (its view's download.bytes_done); None: not known here.
    job_bytes: Callable[[str], Awaitable[int]] | None = None

    def disk_low(self, media_dir: Path) -> str | None:
        """Why a new download must wait, or None."""
        if not self.min_free_disk:
            return None
        free = self.free(media_dir)
        if free >= self.min_free_disk:
            return None
        return (
            f"{free // 2**20} MiB free on the media disk, under TUBEFLOW_MIN_FREE_DISK ({self.min_free_disk // 2**20}"
            " MiB): the download starts when there is room"
        )

    async def item_budget(self, job_id: str) -> int | None:
        """The bytes the job's next item may take (None: no bound), or MediaError ``job_budget_exceeded``."""
        limit = self.max_filesize or None
        if self.max_job_bytes and self.job_bytes is not None:
            left = self.max_job_bytes - await self.job_bytes(job_id)
            if left <= 0:
                raise MediaError(
                    "job_budget_exceeded",
                    f"the job's downloads already take its {self.max_job_bytes} bytes (TUBEFLOW_MAX_JOB_BYTES)",
                )
            limit = min(limit or left, left)
        return limit


def sweep(media_dir: Path, retention_days: float, now: Callable[[], float] = time.time) -> list[str]:
    """Delete every job's media folder whose newest file is older than ``retention_days``; returns the job ids."""
    if retention_days <= 0 or not media_dir.is_dir():
        return []
    cutoff = now() - retention_days * 86400
    removed = []
    for folder in media_dir.iterdir():
        if not folder.is_dir() or not is_job_id(folder.name):
            continue
        newest = max((p.stat().st_mtime for p in folder.rglob("*") if p.is_file()), default=folder.stat().st_mtime)
        if newest < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    if removed:
        log.info("removed the media of %d job(s) older than %g days", len(removed), retention_days)
    return removed
