"""Disk bounds: an item's size (refused before or stopped during the download, audio included), a job's budget, the
free-space floor under which downloads wait, partial files gone after a permanent failure, old media swept."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from contracts.fold import fold
from contracts.ids import new_job_id
from services.downloader.disk import DiskLimits, sweep
from services.engine.slots import SlotConfig, SlotPool
from services.extractor.ffmpeg import extract_audio
from services.runtime.addresses import AddressPolicy, parse_networks
from services.runtime.failures import MediaError
from tests.service.test_downloader_service import FakeMedia, item_queued, make

LOOPBACK_ONLY = AddressPolicy(allowed_networks=parse_networks("127.0.0.0/8"))


class SizedMedia(FakeMedia):
    """Remembers the byte bound each download was given."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.bounds: list[int | None] = []

    def download(self, url, *, directory, stem, format, hook, reuse=None, token=None, max_bytes=None, **_):
        self.bounds.append(max_bytes)
        return super().download(url, directory=directory, stem=stem, format=format, hook=hook)


async def test_under_the_free_disk_floor_an_item_waits_visibly_then_starts(tmp_path):
    free = [10]
    disk = DiskLimits(min_free_disk=100, check_every=0.02, free=lambda path: free[0])
    downloader, publisher = make(tmp_path, FakeMedia(), disk=disk)
    queued = item_queued("video")
    task = asyncio.create_task(downloader.download(queued))
    await asyncio.sleep(0.2)
    assert publisher.types() == ["download.waiting"], "the item started on a full disk"
    waiting = publisher.events[0].data
    assert waiting.code == "disk_low" and "TUBEFLOW_MIN_FREE_DISK" in waiting.message
    free[0] = 1000
    await asyncio.wait_for(task, 5)
    assert publisher.types()[-1] == "download.completed"
    # In the view: the item says why it waits, and stops saying so once it starts.
    view = fold([_requested(queued), queued.model_copy(update={"seq": 2}), *_numbered(publisher.events[:1], 3)])
    assert view.items[0].waiting is not None and view.items[0].waiting.code == "disk_low"
    view = fold([_requested(queued), queued.model_copy(update={"seq": 2}), *_numbered(publisher.events, 3)])
    assert view.items[0].waiting is None and view.items[0].status == "completed"


async def test_a_cancel_ends_the_wait_for_disk(tmp_path):
    disk = DiskLimits(min_free_disk=100, check_every=0.02, free=lambda path: 0)
    downloader, publisher = make(tmp_path, FakeMedia(), disk=disk)
    queued = item_queued("video")
    task = asyncio.create_task(downloader.download(queued))
    await asyncio.sleep(0.1)
    downloader.cancellations.cancel(queued.job_id)
    await asyncio.wait_for(task, 2)
    assert publisher.types() == ["download.waiting"]


async def test_a_jobs_byte_budget_bounds_each_item_and_refuses_when_spent(tmp_path):
    spent = [0]

    async def job_bytes(job_id: str) -> int:
        return spent[0]

    media = SizedMedia()
    disk = DiskLimits(max_filesize=5000, max_job_bytes=8000, job_bytes=job_bytes)
    downloader, publisher = make(tmp_path, media, disk=disk)
    await downloader.download(item_queued("video"))
    spent[0] = 6000
    await downloader.download(item_queued("video"))
    assert media.bounds == [5000, 2000]  # the item bound, then what is left of the job's
    spent[0] = 8000
    await downloader.download(item_queued("video"))
    assert publisher.types()[-1] == "download.failed"
    assert publisher.events[-1].data.code == "job_budget_exceeded"


async def test_partial_files_are_removed_after_a_permanent_failure(tmp_path):
    queued = item_queued("video")

    class Failing(FakeMedia):
        def download(self, url, *, directory, stem, format, hook, reuse=None, token=None, max_bytes=None, **_):
            (directory / f"{stem}-clip.mp4.part").write_bytes(b"x" * 100)
            (directory / f"{stem}-clip.f1.mp4.part-Frag3").write_bytes(b"x")
            raise MediaError("http_404", "gone")

    downloader, publisher = make(tmp_path, Failing())
    await downloader.download(queued)
    assert publisher.types()[-1] == "download.failed"
    assert list((tmp_path / queued.job_id).iterdir()) == []


def test_a_download_bigger_than_allowed_is_refused_and_leaves_nothing(media, tmp_path):
    pool = SlotPool(1, SlotConfig(policy=LOOPBACK_ONLY), download_timeout=60)
    try:
        size = (media.root / "long.mp4").stat().st_size
        for name, limit in (("long.mp4", size // 2), ("long.mp4", size - 1)):
            with pytest.raises(MediaError) as caught:
                pool.download(
                    media.url(media.fresh(name)),
                    directory=tmp_path,
                    stem="0001",
                    format=None,
                    hook=lambda d: None,
                    max_bytes=limit,
                )
            assert caught.value.code == "file_too_large" and "TUBEFLOW_MAX_FILESIZE" in caught.value.message
        # Split streams whose sizes only show while they download (HLS): stopped once the bytes pass the bound.
        with pytest.raises(MediaError) as caught:
            pool.download(
                media.fresh_stream("hls", "master.m3u8"),
                directory=tmp_path / "hls",
                stem="0001",
                format=None,
                hook=lambda d: None,
                max_bytes=50_000,
            )
        assert caught.value.code == "file_too_large"
        done = pool.download(
            media.url(media.fresh("clip1.mp4")),
            directory=tmp_path / "ok",
            stem="0001",
            format=None,
            hook=lambda d: None,
            max_bytes=size,
        )
        assert done.path.is_file()
    finally:
        pool.close()


async def test_audio_bigger_than_allowed_is_refused(media, tmp_path):
    with pytest.raises(MediaError) as caught:
        await extract_audio(
            media.root / "podcast.mp4",
            tmp_path / "podcast.wav",
            "wav",
            duration=None,
            on_progress=lambda p, t: None,
            max_bytes=100_000,
        )
    assert caught.value.code == "file_too_large"
    assert list(tmp_path.iterdir()) == []


def test_media_older_than_the_retention_is_swept(tmp_path):
    old, fresh = new_job_id(), new_job_id()
    for job in (old, fresh):
        (tmp_path / job).mkdir()
        (tmp_path / job / "0001-a.mp4").write_bytes(b"x")
    (tmp_path / "not-a-job").mkdir()
    ten_days_ago = time.time() - 10 * 86400
    os.utime(tmp_path / old / "0001-a.mp4", (ten_days_ago, ten_days_ago))
    os.utime(tmp_path / "not-a-job", (ten_days_ago, ten_days_ago))
    assert sweep(tmp_path, 0) == []
    assert sweep(tmp_path, 7) == [old]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh, "not-a-job"])


def _requested(queued):
    from contracts import events as ev

    return ev.make_event(
        "requested",
        job_id=queued.job_id,
        data=ev.Requested(url="http://m/1", mode="video"),
        occurred_at=queued.occurred_at,
        event_id="r",
    ).model_copy(update={"seq": 1})


def _numbered(events, start):
    return [e.model_copy(update={"seq": start + n}) for n, e in enumerate(events)]
