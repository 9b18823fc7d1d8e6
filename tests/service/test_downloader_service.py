"""Downloader handlers with fakes passed in: what they publish, in which order, and that the loop stays free."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

from contracts import events as ev
from contracts.ids import new_job_id
from contracts.options import DownloadOptions
from services.downloader.handlers import Downloader
from services.engine.media import Downloaded, Entry, Resolution
from services.runtime.failures import MediaError
from tests.support.fakes import FakePublisher

NOW = datetime(2026, 11, 22, tzinfo=timezone.utc)


class FakeMedia:
    def __init__(
        self,
        entries: int = 3,
        size: int = 1000,
        fail: MediaError | None = None,
        pause: float = 0.0,
        images: tuple[str | None, str | None] = (None, None),
    ):
        self.images = images
        self.entries = entries
        self.size = size
        self.fail = fail
        self.pause = pause
        self.threads: set[str] = set()

    def resolve(self, url: str, *, max_items: int, items: str | None = None, token=None, **_) -> Resolution:
        if self.fail:
            raise self.fail
        entries = [Entry(i, f"{url}/{i}", f"clip {i}") for i in range(1, self.entries + 1)]
        return Resolution("playlist", "A list", entries[:max_items], self.entries > max_items, images=self.images)

    def download(self, url, *, directory, stem, format, hook, reuse=None, token=None, max_bytes=None, **_):
        import threading

        self.threads.add(threading.current_thread().name)
        if self.fail:
            raise self.fail
        for done in range(0, self.size + 1, self.size // 10):
            hook({"status": "downloading", "downloaded_bytes": done, "total_bytes": self.size, "speed": 100.0})
            time.sleep(self.pause / 10)
        hook({"status": "finished", "downloaded_bytes": self.size, "total_bytes": self.size})
        path = directory / f"{stem}-clip.mp4"
        path.write_bytes(b"x" * self.size)
        return Downloaded(path, self.size, "clip", 2.0)


def make(tmp_path, media, **kw) -> tuple[Downloader, FakePublisher]:
    publisher = FakePublisher()
    downloader = Downloader(
        publisher=publisher,
        media=media,
        executor=ThreadPoolExecutor(2, thread_name_prefix="yt-dlp"),
        media_dir=tmp_path,
        worker="test:1",
        now=lambda: NOW,
        progress_interval=0.0,
        progress_min_step=0.0,
        **kw,
    )
    return downloader, publisher


def requested(mode="both", options: DownloadOptions | None = None) -> ev.RequestedEvent:
    return ev.make_event(
        "requested",
        job_id=new_job_id(),
        data=ev.Requested(url="http://m/list", mode=mode, options=options),
        occurred_at=NOW,
        event_id="r",
    )


async def test_resolve_announces_the_job_then_one_small_event_per_item(tmp_path):
    downloader, publisher = make(tmp_path, FakeMedia(entries=5), max_items=3)
    event = requested()
    await downloader.resolve(event)
    assert publisher.types() == ["resolve.started", "resolved"] + ["item.queued"] * 3
    resolved = publisher.events[1]
    assert resolved.data.item_count == 3 and resolved.data.truncated and resolved.data.kind == "playlist"
    queued = publisher.events[2:]
    assert sorted(e.item_id for e in queued) == ["0001", "0002", "0003"]
    assert all(e.data.mode == "both" and e.data.url.startswith("http://m/list/") for e in queued)
    # Deterministic ids: a redelivered `requested` publishes the same ids, and JetStream drops the copies.
    again, publisher2 = make(tmp_path, FakeMedia(entries=5), max_items=3)
    await again.resolve(event)
    assert [e.event_id for e in publisher2.events] == [e.event_id for e in publisher.events]


async def test_a_playlist_laid_out_as_a_show_carries_its_own_images_to_each_item(tmp_path):
    images = ("http://m/avatar.jpg", "http://m/banner.jpg")
    downloader, publisher = make(tmp_path, FakeMedia(entries=2, images=images))
    await downloader.resolve(requested(options=DownloadOptions(library={"kind": "show"})))
    queued = [e for e in publisher.events if e.type == "item.queued"]
    assert [(e.data.options.library.poster, e.data.options.library.fanart) for e in queued] == [images] * 2
    # Not a show: the options stay as sent.
    downloader, publisher = make(tmp_path, FakeMedia(entries=1, images=images))
    await downloader.resolve(requested(options=DownloadOptions(library={"kind": "music"})))
    assert [e.data.options.library.poster for e in publisher.events if e.type == "item.queued"] == [None]


async def test_resolve_failure_becomes_resolve_failed_with_code(tmp_path):
    downloader, publisher = make(tmp_path, FakeMedia(fail=MediaError("unsupported_url", "Unsupported URL: x")))
    await downloader.resolve(requested())
    assert publisher.types() == ["resolve.started", "resolve.failed"]
    assert publisher.events[1].data.code == "unsupported_url"


async def test_download_reports_progress_from_the_worker_thread_without_blocking_the_loop(tmp_path):
    media = FakeMedia(size=1000, pause=0.3)
    downloader, publisher = make(tmp_path, media)
    job = requested()
    queued = item_queued("both", job.job_id, audio_format="flac")
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    tick = asyncio.create_task(ticker())
    await downloader.download(queued, attempt=2)
    tick.cancel()
    assert ticks >= 10, "the event loop was blocked during the download"
    assert media.threads and all(name.startswith("yt-dlp") for name in media.threads)
    types = publisher.types()
    assert types[0] == "download.started" and types[-1] == "download.completed"
    assert publisher.events[0].data.attempt == 2
    progress = [e.data for e in publisher.events if e.type == "download.progress"]
    assert len(progress) >= 3
    assert [p.downloaded_bytes for p in progress] == sorted(p.downloaded_bytes for p in progress)
    assert progress[-1].downloaded_bytes == 1000  # the final report is always sent
    completed = publisher.events[-1].data
    assert completed.audio_format == "flac" and completed.size == 1000
    assert completed.file == f"{job.job_id}/0001-clip.mp4"
    assert all(e.item_id == "0001" and e.data.worker == "test:1" for e in publisher.events)


def item_queued(mode: str, job_id: str | None = None, audio_format: str = "mp3") -> ev.ItemQueuedEvent:
    return ev.make_event(
        "item.queued",
        job_id=job_id or new_job_id(),
        item_id="0001",
        occurred_at=NOW,
        event_id="q",
        data=ev.ItemQueued(index=1, url="http://m/1", mode=mode, audio_format=audio_format),
    )


async def test_a_video_only_job_asks_for_no_extraction(tmp_path):
    downloader, publisher = make(tmp_path, FakeMedia())
    await downloader.download(item_queued("video"))
    assert publisher.events[-1].type == "download.completed" and publisher.events[-1].data.audio_format is None


async def test_a_failed_download_is_an_event_with_code_and_message(tmp_path):
    downloader, publisher = make(tmp_path, FakeMedia(fail=MediaError("http_404", "HTTP Error 404: Not Found")))
    await downloader.download(item_queued("video"))
    assert publisher.types() == ["download.started", "download.failed"]
    assert publisher.events[-1].data.code == "http_404" and "404" in publisher.events[-1].data.message
