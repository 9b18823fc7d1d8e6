"""The extractor's handler with a fake publisher and real ffmpeg on a small clip: what it publishes, the file it
writes, and how it stops."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path

import pytest

from contracts import events as ev
from contracts.ids import new_job_id
from services.extractor.handlers import Extractor
from services.runtime.cancellation import Cancellations
from services.runtime.nats.work import RetryLater
from tests.support.fakes import FakePublisher
from tests.support.media import make_clip

NOW = datetime(2026, 11, 22, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    make_clip(root / "short.mp4", seconds=2)
    # Minutes of audio in a tiny picture: its extraction lasts long enough to stop it midway.
    make_clip(root / "long.mp4", seconds=240, size="64x48", bitrate="20k")
    return root


def setup_job(tmp_path: Path, clips: Path, clip: str) -> tuple[Path, str, str]:
    """A media dir holding one downloaded file of a new job; returns (media dir, job id, the file's relative path)."""
    job = new_job_id()
    (tmp_path / job).mkdir(parents=True)
    (tmp_path / job / f"0001-{clip}").write_bytes((clips / clip).read_bytes())
    return tmp_path, job, f"{job}/0001-{clip}"


def completed(job: str, file: str, audio_format: str | None = "mp3") -> ev.DownloadCompletedEvent:
    return ev.make_event(
        "download.completed",
        job_id=job,
        item_id="0001",
        occurred_at=NOW,
        event_id=f"{job}:dc",
        data=ev.DownloadCompleted(worker="dl:1", file=file, size=1, audio_format=audio_format),
    )


def make(media_dir: Path, cancellations: Cancellations | None = None) -> tuple[Extractor, FakePublisher]:
    publisher = FakePublisher()
    extractor = Extractor(
        publisher=publisher,
        media_dir=media_dir,
        worker="ex:1",
        progress_interval=0.0,
        progress_min_step=0.0,
        cancellations=cancellations or Cancellations(),
        now=lambda: NOW,
    )
    return extractor, publisher


async def test_extraction_publishes_started_progress_and_completed_with_the_audio_file(tmp_path, clips):
    media_dir, job, file = setup_job(tmp_path, clips, "short.mp4")
    extractor, publisher = make(media_dir)
    await extractor.extract(completed(job, file))
    types = publisher.types()
    assert types[0] == "extract.started" and types[-1] == "extract.completed"
    assert "extract.progress" in types
    percents = [e.data.percent for e in publisher.events if e.type == "extract.progress"]
    assert percents == sorted(percents) and percents[-1] == 100.0
    done = publisher.events[-1].data
    assert done.file == f"{job}/0001-short.mp3" and not done.reused
    assert (media_dir / done.file).stat().st_size == done.size > 0
    assert all(e.item_id == "0001" and e.job_id == job for e in publisher.events)
    # The same audio asked for again (another job reusing the download) is not made twice.
    again, publisher2 = make(media_dir)
    await again.extract(completed(job, file))
    assert publisher2.types() == ["extract.started", "extract.completed"] and publisher2.events[-1].data.reused


async def test_an_audio_file_of_another_download_at_the_name_is_never_taken_as_this_ones(tmp_path, clips):
    """Issue 23: job A placed `shared2/song.mp3` (its own download, by folder and template); job V (audio, the same
    output) downloaded `shared2/song.mp4`, and its audio "reused" A's file, which deleting A then removed."""
    media_dir = tmp_path
    (media_dir / "shared2").mkdir()
    (media_dir / "shared2" / "song.mp3").write_bytes(b"job A's own mp3")
    (media_dir / "shared2" / "song.mp4").write_bytes((clips / "short.mp4").read_bytes())
    job = new_job_id()
    extractor, publisher = make(media_dir)
    await extractor.extract(completed(job, "shared2/song.mp4"))
    done = publisher.events[-1].data
    assert publisher.events[-1].type == "extract.completed" and not done.reused
    assert done.file == "shared2/song (2).mp3" and (media_dir / done.file).stat().st_size == done.size > 100
    assert (media_dir / "shared2" / "song.mp3").read_bytes() == b"job A's own mp3"
    # Its own audio, asked for again (a redelivery, or another job reusing the download), is found and reused.
    again, publisher2 = make(media_dir)
    await again.extract(completed(job, "shared2/song.mp4"))
    assert publisher2.events[-1].data.reused and publisher2.events[-1].data.file == "shared2/song (2).mp3"


async def test_a_missing_download_fails_with_a_code(tmp_path):
    extractor, publisher = make(tmp_path)
    job = new_job_id()
    await extractor.extract(completed(job, f"{job}/0001-gone.mp4"))
    assert publisher.types() == ["extract.started", "extract.failed"]
    assert publisher.events[-1].data.code == "missing_file"


async def test_a_file_outside_the_media_dir_is_refused(tmp_path, clips):
    media_dir = tmp_path / "media"
    media_dir.mkdir()
    (tmp_path / "secret.mp4").write_bytes((clips / "short.mp4").read_bytes())
    extractor, publisher = make(media_dir)
    await extractor.extract(completed(new_job_id(), "../secret.mp4"))
    assert publisher.events[-1].type == "extract.failed" and publisher.events[-1].data.code == "missing_file"


async def test_nothing_happens_for_video_only_jobs_or_cancelled_ones(tmp_path, clips):
    media_dir, job, file = setup_job(tmp_path, clips, "short.mp4")
    extractor, publisher = make(media_dir)
    await extractor.extract(completed(job, file, audio_format=None))
    cancellations = Cancellations()
    cancellations.cancel(job)
    cancelled, publisher2 = make(media_dir, cancellations)
    await cancelled.extract(completed(job, file))
    assert publisher.events == [] and publisher2.events == []


async def test_a_cancel_stops_ffmpeg_midway_and_leaves_no_file(tmp_path, clips):
    media_dir, job, file = setup_job(tmp_path, clips, "long.mp4")
    cancellations = Cancellations()
    extractor, publisher = make(media_dir, cancellations)
    running = asyncio.create_task(extractor.extract(completed(job, file)))
    for _ in range(200):  # bounded: until ffmpeg reports progress
        if "extract.progress" in publisher.types():
            break
        await asyncio.sleep(0.01)
    cancellations.cancel(job)
    await asyncio.wait_for(running, 10)
    assert "extract.completed" not in publisher.types() and "extract.failed" not in publisher.types()
    assert sorted(p.name for p in (media_dir / job).iterdir()) == ["0001-long.mp4"]


async def test_a_shutdown_hands_the_extraction_back(tmp_path, clips):
    media_dir, job, file = setup_job(tmp_path, clips, "long.mp4")
    cancellations = Cancellations()
    extractor, publisher = make(media_dir, cancellations)
    running = asyncio.create_task(extractor.extract(completed(job, file)))
    for _ in range(200):
        if "extract.progress" in publisher.types():
            break
        await asyncio.sleep(0.01)
    await cancellations.shutdown(grace=0.0)
    with pytest.raises(RetryLater):
        await asyncio.wait_for(running, 10)
    assert "extract.completed" not in publisher.types()


async def test_audio_made_of_a_download_is_reused_through_another_jobs_link_to_it(tmp_path, clips):
    """A reused download is hard-linked into the reusing job's folder with the audio already made of it (deletion's
    `adopt`): that audio is the same file's, so it is reused, not made again beside it."""
    import os

    media_dir, job, file = setup_job(tmp_path, clips, "short.mp4")
    first, _ = make(media_dir)
    await first.extract(completed(job, file))
    other = new_job_id()
    (media_dir / other).mkdir()
    os.link(media_dir / file, media_dir / other / "0001-short.mp4")
    os.link(media_dir / job / "0001-short.mp3", media_dir / other / "0001-short.mp3")
    again, publisher = make(media_dir)
    await again.extract(completed(other, f"{other}/0001-short.mp4"))
    assert publisher.types() == ["extract.started", "extract.completed"]
    assert publisher.events[-1].data.reused and publisher.events[-1].data.file == f"{other}/0001-short.mp3"
