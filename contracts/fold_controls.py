"""The fold's rules for the commands people give a job (cancel, retry, start, priority, delete): one function per
event type, registered with the fold's dispatch in ``contracts.fold``. Pure like the rest of the fold."""

from __future__ import annotations

from typing import Callable

from contracts import events as ev
from contracts.items import STEP_DONE, wants_audio
from contracts.totals import replace
from contracts.views import ItemDownload, ItemExtract, ItemPostprocess, JobView, Progress


def cancelled(event: ev.CancelRequestedEvent, view: JobView) -> JobView:
    items = []
    stopping = False
    for item in view.items:
        if item.status in ("completed", "failed", "skipped"):
            items.append(item)
            continue
        if item.status in ("recording", "stopping"):
            # A live recording stops and keeps what it has: the item completes when its file is there.
            items.append(replace(item, {"status": "stopping", "seq": event.seq}))
            stopping = True
            continue
        download, extract = item.download, item.extract
        if download.status not in STEP_DONE:
            download = replace(download, {"status": "skipped", "speed": None, "eta": None})
        if extract.status not in STEP_DONE and extract.status != "none":
            extract = replace(extract, {"status": "skipped"})
        changes = {"status": "skipped", "download": download, "extract": extract, "seq": event.seq}
        if item.postprocess.status == "running":
            changes["postprocess"] = stopped(item.postprocess, "skipped")
        items.append(replace(item, changes))
    if stopping:
        # Not over yet: the job ends when the recordings are files (the waiting items are skipped already).
        return replace(view, {"items": items})
    return replace(
        view,
        {
            "status": "cancelled",
            "finished_at": event.occurred_at,
            "error": ev.ErrorInfo(code="cancelled", message=event.data.reason or "cancelled on request"),
            "items": items,
        },
    )


def retried(event: ev.RetryRequestedEvent, view: JobView) -> JobView:
    data = event.data
    if not view.terminal or data.round <= view.retries:
        return view
    # A retry starts a new run: the bar is measured again from what is already done (see README).
    update: dict = {
        "status": "running",
        "finished_at": None,
        "error": None,
        "retries": data.round,
        "progress": Progress(percent=0.0, stage="downloading"),
    }
    if data.resolve:
        update.update(status="queued", progress=Progress(), item_count=None, items=[])
        return replace(view, update)
    wanted = set(data.items)
    audio = wants_audio(view.mode)
    items = []
    for item in view.items:
        if item.id in wanted:
            item = replace(
                item,
                {
                    "status": "queued",
                    "error": None,
                    "download": ItemDownload(),
                    "postprocess": ItemPostprocess(),
                    "extract": ItemExtract(status="queued" if audio else "none"),
                    "seq": event.seq,
                },
            )
        items.append(item)
    update["items"] = items
    return replace(view, update)


def stopped(postprocess: ItemPostprocess, status: str) -> ItemPostprocess:
    """A post-processing step that was running when its download failed or was cancelled."""
    return replace(postprocess, {"status": status}) if postprocess.status == "running" else postprocess


def started(event: ev.StartRequestedEvent, view: JobView) -> JobView:
    """A held job's items go to the workers; a job that has not resolved yet will not hold them."""
    if not view.held:
        return view
    return replace(view, {"held": False, "status": "running" if view.status == "held" else view.status})


def reprioritized(event: ev.PriorityChangedEvent, view: JobView) -> JobView:
    return replace(view, {"priority": event.data.priority})


def deleted(event: ev.JobDeletedEvent, view: JobView) -> JobView:
    """The job is gone for readers: its items are dropped from the view (lists and streams leave it out); its events
    stay in the stream."""
    return replace(
        view,
        {
            "deleted_at": event.occurred_at,
            "deleted_files": event.data.files,
            "items": [],
            "item_count": view.item_count,
        },
    )


CONTROLS: dict[type, Callable[..., JobView]] = {
    ev.CancelRequestedEvent: cancelled,
    ev.RetryRequestedEvent: retried,
    ev.StartRequestedEvent: started,
    ev.PriorityChangedEvent: reprioritized,
    ev.JobDeletedEvent: deleted,
}
