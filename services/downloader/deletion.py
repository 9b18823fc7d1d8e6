"""`job.deleted` with ``files``: the job's files go. Its own folder (``<media>/<job>``) is removed whole; a file it
placed elsewhere (an output folder) is removed unless it was reused from another job (then it is that job's).

A reused download is hard-linked into the reusing job's folder (``adopt``), so each job holds its own name for the
bytes and the file system keeps them while any job still refers to them."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import shutil
from pathlib import Path

from nats.js import JetStreamContext

from contracts import events as ev
from contracts.fold import fold
from contracts.ids import step_event_id
from contracts.items import AUDIO_FORMATS, audio_path
from contracts.views import JobView
from services.downloader.catalog import MediaCatalog
from services.engine.media import Downloaded
from services.runtime.cancellation import Cancellations
from services.runtime.clock import utcnow
from services.runtime.nats import ConsumerSpec, Publisher, read_job_events

log = logging.getLogger("tubeflow.deletion")

DELETED = ConsumerSpec("job.deleted", "downloader-deleted-v1", max_ack_pending=64)
# The cancel before a delete stops this process's work on the job at once; other processes get the same cancel at
# the same moment. This long is left for all of them to let go of the job's files.
SETTLE = 2.0


def adopt(result: Downloaded, directory: Path) -> Downloaded:
    """A reused download's files, hard-linked into this job's folder (kept where they are if linking fails)."""
    if not result.reused:
        return result

    def linked(path: Path) -> Path:
        if path.parent == directory:
            return path
        target = directory / path.name
        try:
            if not target.exists():
                os.link(path, target)
            return target
        except OSError as exc:  # another file system, or links not allowed: the other job's file is referred to
            log.warning("could not link %s into %s: %s", path, directory, exc)
            return path

    path = linked(result.path)
    if path != result.path:
        # Audio another job already made of this file comes along, so its extraction is reused too.
        for audio_format in AUDIO_FORMATS:
            made = audio_path(result.path, audio_format)
            if made.is_file() and made != result.path:
                linked(made)  # same name beside the link: where the extractor looks for it
    return dataclasses.replace(result, path=path, files=tuple(linked(f) for f in result.files))


def files_of(view: JobView, media_dir: Path) -> list[Path]:
    """The job's files outside its own folder that are its own (not reused from another job)."""
    own = (media_dir / view.id).resolve()
    found = []
    for item in view.items:
        named = []
        if not item.download.reused:
            named += [item.download.file, *item.download.files]
        if not item.extract.reused:
            named.append(item.extract.file)
        for name in named:
            if not name:
                continue
            path = (media_dir / name).resolve()
            if path.is_relative_to(media_dir.resolve()) and not path.is_relative_to(own):
                found.append(path)
    return found


async def delete_files(
    js: JetStreamContext,
    media_dir: Path,
    cancellations: Cancellations,
    event: ev.JobDeletedEvent,
    catalog: MediaCatalog | None = None,
    publisher: Publisher | None = None,
) -> list[Path]:
    """Remove a deleted job's files (once its work here has stopped); returns what was removed. Items of other jobs
    skipped because this one had the media are told (`item.existing_deleted`)."""
    if not event.data.files:
        return []
    events = [s.event for s in await read_job_events(js, event.job_id)]
    # A job deleted while it ran was cancelled in the same command (same time): its work is let go of first.
    if any(isinstance(e, ev.CancelRequestedEvent) and e.occurred_at == event.occurred_at for e in events):
        for _ in range(120):
            if not cancellations.running_for(event.job_id):
                break
            await asyncio.sleep(0.25)
        await asyncio.sleep(SETTLE)
    view = fold(e for e in events if not isinstance(e, ev.JobDeletedEvent))
    removed: list[Path] = []
    if view is not None:
        for path in files_of(view, media_dir):
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    folder = media_dir / event.job_id
    if folder.is_dir():
        await asyncio.to_thread(shutil.rmtree, folder, True)
        removed.append(folder)
    log.info("job %s deleted: %d file(s) and folder(s) removed", event.job_id, len(removed))
    if view is not None and catalog is not None and publisher is not None:
        await _tell_skips(view, media_dir, catalog, publisher, event)
    return removed


async def _tell_skips(
    view: JobView, media_dir: Path, catalog: MediaCatalog, publisher: Publisher, event: ev.JobDeletedEvent
) -> None:
    """Every skipped item that pointed at one of this job's files (now gone) hears of it, once (the event's id is
    fixed by the item and the file: a redelivered deletion publishes a duplicate, which JetStream drops)."""
    names = {n for item in view.items for n in (item.download.file, *item.download.files, item.extract.file) if n}
    for name in sorted(names):
        if (media_dir / name).exists():
            continue  # still there (a file of another job's, reused here): nothing was lost
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        for key, skip in (await catalog.skips_of(name)).items():
            await publisher.publish(
                ev.make_event(
                    "item.existing_deleted",
                    job_id=skip["job"],
                    item_id=skip["item"],
                    data=ev.ExistingDeleted(file=name, by_job=event.job_id),
                    occurred_at=utcnow(),
                    event_id=f"{step_event_id(skip['job'], 'item.existing_deleted', skip['item'])}:{digest}",
                )
            )
            await catalog.forget(key)
