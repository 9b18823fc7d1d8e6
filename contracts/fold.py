"""The one pure fold: ``apply(view, event) -> view``.

The projector, ``tubeflow replay``, the API's first answer to a POST and the tests all call this function. It reads
no clock, does no I/O and knows no settings: every timestamp comes from the events. An event whose stream sequence
is not newer than the view's ``seq`` changes nothing, so redelivered events are harmless.
"""

from __future__ import annotations

import math
from functools import singledispatch
from typing import Iterable

from contracts import events as ev
from contracts.views import (
    TERMINAL_STATUSES,
    DownloadSummary,
    ExtractSummary,
    ItemDownload,
    ItemExtract,
    ItemView,
    JobView,
    Progress,
)

# Share of an item's progress that belongs to the download when audio is asked for; the rest is extraction.
DOWNLOAD_WEIGHT = 0.8

_STEP_DONE = frozenset({"completed", "failed", "skipped"})


def wants_audio(mode: str) -> bool:
    return mode in ("audio", "both")


def apply(view: JobView | None, event: ev.Envelope) -> JobView:
    """Fold one event into a job view. ``view`` is None before the job's first event."""
    if view is not None and event.seq and event.seq <= view.seq:
        return view
    if view is None:
        if not isinstance(event, ev.RequestedEvent):
            # Events of a job whose `requested` event is missing: keep a placeholder rather than fail the reader.
            view = JobView(
                id=event.job_id,
                url="",
                mode="video",
                audio_format="mp3",
                created_at=event.occurred_at,
                updated_at=event.occurred_at,
            )
        else:
            view = _new_job(event)
            return _stamp(view, event)
    elif view.terminal and not isinstance(event, (ev.RequestedEvent, ev.RetryRequestedEvent)):
        # A finished job is final; late events (a straggling progress report) only advance the sequence.
        return view.model_copy(update={"seq": max(view.seq, event.seq)})
    view = _apply(event, view)
    return _stamp(_recompute(view, event), event)


def fold(events: Iterable[ev.Envelope], view: JobView | None = None) -> JobView | None:
    for event in events:
        view = apply(view, event)
    return view


def _new_job(event: ev.RequestedEvent) -> JobView:
    data = event.data
    return JobView(
        id=event.job_id,
        url=data.url,
        mode=data.mode,
        audio_format=data.audio_format,
        format=data.format,
        playlist_items=data.playlist_items,
        created_at=event.occurred_at,
        updated_at=event.occurred_at,
        extract=ExtractSummary(status="queued" if wants_audio(data.mode) else "none"),
    )


def _stamp(view: JobView, event: ev.Envelope) -> JobView:
    return view.model_copy(update={"seq": max(view.seq, event.seq), "updated_at": event.occurred_at})


# --- per event ------------------------------------------------------------------------------------------------


@singledispatch
def _apply(event: ev.Envelope, view: JobView) -> JobView:
    return view


@_apply.register
def _(event: ev.RequestedEvent, view: JobView) -> JobView:
    return view


@_apply.register
def _(event: ev.ResolveStartedEvent, view: JobView) -> JobView:
    if view.status != "queued":
        return view
    return view.model_copy(update={"status": "resolving"})


@_apply.register
def _(event: ev.ResolvedEvent, view: JobView) -> JobView:
    data = event.data
    return view.model_copy(
        update={
            "status": "running",
            "kind": data.kind,
            "title": data.title or view.title,
            "item_count": data.item_count,
            "truncated": data.truncated,
        }
    )


@_apply.register
def _(event: ev.ResolveFailedEvent, view: JobView) -> JobView:
    return view.model_copy(
        update={
            "status": "failed",
            "error": ev.ErrorInfo(code=event.data.code, message=event.data.message),
            "finished_at": event.occurred_at,
            "progress": Progress(percent=100.0, stage="done"),
        }
    )


@_apply.register
def _(event: ev.ItemQueuedEvent, view: JobView) -> JobView:
    item_id = event.item_id or str(event.data.index)
    if _find(view, item_id) is not None:
        return view
    item = ItemView(
        id=item_id,
        index=event.data.index,
        title=event.data.title,
        url=event.data.url,
        extract=ItemExtract(status="queued" if wants_audio(view.mode) else "none"),
        seq=event.seq,
    )
    items = list(view.items)
    position = len(items)
    while position > 0 and items[position - 1].index > item.index:
        position -= 1
    items.insert(position, item)
    return view.model_copy(update={"items": items})


@_apply.register
def _(event: ev.DownloadStartedEvent, view: JobView) -> JobView:
    def change(item: ItemView) -> ItemView:
        if item.download.status in _STEP_DONE:
            return item
        return item.model_copy(
            update={
                "status": "downloading",
                "attempts": max(item.attempts, event.data.attempt),
                "worker": event.data.worker,
                "download": item.download.model_copy(update={"status": "running"}),
            }
        )

    return _update_item(view, event, change)


@_apply.register
def _(event: ev.DownloadProgressEvent, view: JobView) -> JobView:
    data = event.data

    def change(item: ItemView) -> ItemView:
        if item.download.status in _STEP_DONE:
            return item
        percent = item.download.percent
        if data.total_bytes:
            percent = min(100.0, 100.0 * data.downloaded_bytes / data.total_bytes)
        elif data.fragment_count:
            percent = min(100.0, 100.0 * (data.fragment_index or 0) / data.fragment_count)
        return item.model_copy(
            update={
                "status": "downloading",
                "attempts": max(item.attempts, 1),
                "worker": data.worker,
                "download": item.download.model_copy(
                    update={
                        "status": "running",
                        "percent": round(percent, 1),
                        "downloaded_bytes": data.downloaded_bytes,
                        "total_bytes": data.total_bytes,
                        "speed": data.speed,
                        "eta": data.eta,
                    }
                ),
            }
        )

    return _update_item(view, event, change)


@_apply.register
def _(event: ev.DownloadRetryingEvent, view: JobView) -> JobView:
    data = event.data

    def change(item: ItemView) -> ItemView:
        if item.download.status in _STEP_DONE:
            return item
        return item.model_copy(
            update={
                "status": "queued",
                "attempts": max(item.attempts, data.attempt),
                "worker": data.worker,
                "error": ev.ErrorInfo(code=data.code, message=data.message),
                "download": item.download.model_copy(update={"status": "queued", "speed": None, "eta": None}),
            }
        )

    return _update_item(view, event, change)


@_apply.register
def _(event: ev.DownloadCompletedEvent, view: JobView) -> JobView:
    data = event.data
    audio = wants_audio(view.mode)

    def change(item: ItemView) -> ItemView:
        if item.download.status in _STEP_DONE:
            return item
        return item.model_copy(
            update={
                "status": "extracting" if audio else "completed",
                "title": item.title or data.title,
                "attempts": max(item.attempts, 1),
                "worker": data.worker,
                "error": None,
                "download": ItemDownload(
                    status="completed",
                    percent=100.0,
                    downloaded_bytes=data.size,
                    total_bytes=data.size,
                    file=data.file,
                    size=data.size,
                    reused=data.reused,
                ),
            }
        )

    return _update_item(view, event, change)


@_apply.register
def _(event: ev.DownloadFailedEvent, view: JobView) -> JobView:
    data = event.data

    def change(item: ItemView) -> ItemView:
        if item.download.status in _STEP_DONE:
            return item
        return item.model_copy(
            update={
                "status": "failed",
                "attempts": max(item.attempts, data.attempt),
                "worker": data.worker,
                "error": ev.ErrorInfo(code=data.code, message=data.message),
                "download": item.download.model_copy(update={"status": "failed", "speed": None, "eta": None}),
                "extract": item.extract.model_copy(
                    update={"status": "skipped" if item.extract.status != "none" else "none"}
                ),
            }
        )

    return _update_item(view, event, change)


@_apply.register
def _(event: ev.ExtractStartedEvent, view: JobView) -> JobView:
    def change(item: ItemView) -> ItemView:
        if item.extract.status in _STEP_DONE:
            return item
        return item.model_copy(
            update={"status": "extracting", "extract": item.extract.model_copy(update={"status": "running"})}
        )

    return _update_item(view, event, change)


@_apply.register
def _(event: ev.ExtractProgressEvent, view: JobView) -> JobView:
    def change(item: ItemView) -> ItemView:
        if item.extract.status in _STEP_DONE:
            return item
        percent = round(min(100.0, max(0.0, event.data.percent)), 1)
        return item.model_copy(
            update={
                "status": "extracting",
                "extract": item.extract.model_copy(update={"status": "running", "percent": percent}),
            }
        )

    return _update_item(view, event, change)


@_apply.register
def _(event: ev.ExtractCompletedEvent, view: JobView) -> JobView:
    def change(item: ItemView) -> ItemView:
        if item.extract.status in _STEP_DONE:
            return item
        return item.model_copy(
            update={
                "status": "completed",
                "extract": ItemExtract(
                    status="completed",
                    percent=100.0,
                    file=event.data.file,
                    size=event.data.size,
                    reused=event.data.reused,
                ),
            }
        )

    return _update_item(view, event, change)


@_apply.register
def _(event: ev.ExtractFailedEvent, view: JobView) -> JobView:
    def change(item: ItemView) -> ItemView:
        if item.extract.status in _STEP_DONE:
            return item
        return item.model_copy(
            update={
                "status": "failed",
                "error": ev.ErrorInfo(code=event.data.code, message=event.data.message),
                "extract": item.extract.model_copy(update={"status": "failed"}),
            }
        )

    return _update_item(view, event, change)


@_apply.register
def _(event: ev.CancelRequestedEvent, view: JobView) -> JobView:
    items = []
    for item in view.items:
        if item.status in ("completed", "failed", "skipped"):
            items.append(item)
            continue
        download, extract = item.download, item.extract
        if download.status not in _STEP_DONE:
            download = download.model_copy(update={"status": "skipped", "speed": None, "eta": None})
        if extract.status not in _STEP_DONE and extract.status != "none":
            extract = extract.model_copy(update={"status": "skipped"})
        items.append(
            item.model_copy(update={"status": "skipped", "download": download, "extract": extract, "seq": event.seq})
        )
    return view.model_copy(
        update={
            "status": "cancelled",
            "finished_at": event.occurred_at,
            "error": ev.ErrorInfo(code="cancelled", message=event.data.reason or "cancelled on request"),
            "items": items,
        }
    )


@_apply.register
def _(event: ev.RetryRequestedEvent, view: JobView) -> JobView:
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
        return view.model_copy(update=update)
    wanted = set(data.items)
    audio = wants_audio(view.mode)
    items = []
    for item in view.items:
        if item.id in wanted:
            item = item.model_copy(
                update={
                    "status": "queued",
                    "error": None,
                    "download": ItemDownload(),
                    "extract": ItemExtract(status="queued" if audio else "none"),
                    "seq": event.seq,
                }
            )
        items.append(item)
    update["items"] = items
    return view.model_copy(update=update)


# --- helpers --------------------------------------------------------------------------------------------------


def _find(view: JobView, item_id: str) -> int | None:
    items = view.items
    # Items are queued in index order with ids made from the index, so the guess is almost always right.
    guess = _index_guess(item_id)
    if guess is not None and 0 <= guess < len(items) and items[guess].id == item_id:
        return guess
    for position, item in enumerate(items):
        if item.id == item_id:
            return position
    return None


def _index_guess(item_id: str) -> int | None:
    try:
        return int(item_id) - 1
    except ValueError:
        return None


def _update_item(view: JobView, event: ev.Envelope, change) -> JobView:
    if event.item_id is None:
        return view
    position = _find(view, event.item_id)
    if position is None:
        return view
    old = view.items[position]
    new = change(old)
    if new is old:
        return view
    items = list(view.items)
    items[position] = new.model_copy(update={"seq": max(old.seq, event.seq)})
    return view.model_copy(update={"items": items})


def _item_done(item: ItemView, audio: bool) -> bool:
    if item.download.status in ("failed", "skipped"):
        return True
    if item.download.status != "completed":
        return False
    return not audio or item.extract.status in _STEP_DONE


def _item_succeeded(item: ItemView, audio: bool) -> bool:
    return item.download.status == "completed" and (not audio or item.extract.status == "completed")


def _item_fraction(item: ItemView, audio: bool) -> float:
    if _item_done(item, audio):
        return 1.0
    download = item.download.percent / 100.0
    if not audio:
        return download
    extract = item.extract.percent / 100.0 if item.extract.status == "running" else 0.0
    return DOWNLOAD_WEIGHT * download + (1.0 - DOWNLOAD_WEIGHT) * extract


def _aggregate(done: int, failed: int, total: int) -> str:
    if total == 0 or done < total:
        return "queued" if done == 0 else "running"
    if failed == 0:
        return "completed"
    return "failed" if failed == total else "partial"


def _recompute(view: JobView, event: ev.Envelope) -> JobView:
    """Derive counters, percent and the job status from the items. Runs after every event."""
    if view.status in TERMINAL_STATUSES and view.status != "cancelled":
        return view
    audio = wants_audio(view.mode)
    items = view.items
    total = view.item_count or 0

    dl_completed = dl_failed = dl_skipped = 0
    ex_completed = ex_failed = ex_skipped = 0
    bytes_done = bytes_total = 0
    speed = 0.0
    active = False
    eta: float | None = None
    fraction = 0.0
    succeeded = 0
    finished = 0
    first_error = None
    for item in items:
        download = item.download
        status = download.status
        if status == "completed":
            dl_completed += 1
        elif status == "failed":
            dl_failed += 1
        elif status == "skipped":
            dl_skipped += 1
        elif status == "running":
            active = True
            if download.speed:
                speed += download.speed
            if download.eta is not None:
                eta = download.eta if eta is None else max(eta, download.eta)
        bytes_done += download.downloaded_bytes
        bytes_total += download.total_bytes or 0
        if audio:
            if item.extract.status == "completed":
                ex_completed += 1
            elif item.extract.status == "failed":
                ex_failed += 1
            elif item.extract.status == "skipped":
                ex_skipped += 1
        done = _item_done(item, audio)
        fraction += 1.0 if done else _item_fraction(item, audio)
        if done:
            finished += 1
            if _item_succeeded(item, audio):
                succeeded += 1
            elif first_error is None:
                first_error = item.error

    dl_finished = dl_completed + dl_failed + dl_skipped
    # model_construct: the fold builds these from values it already checked; validating again costs a third of a fold.
    download = DownloadSummary.model_construct(
        status=_aggregate(dl_finished, dl_failed + dl_skipped, total),
        total=total,
        completed=dl_completed,
        failed=dl_failed,
        skipped=dl_skipped,
        remaining=max(0, total - dl_finished),
        bytes_done=bytes_done,
        bytes_total=max(bytes_total, bytes_done),
        speed=speed if active else None,
        eta=eta if active else None,
    )
    ex_total = total if audio else 0
    ex_finished = ex_completed + ex_failed + ex_skipped
    extract = ExtractSummary.model_construct(
        status=_aggregate(ex_finished, ex_failed + ex_skipped, ex_total) if audio else "none",
        total=ex_total,
        completed=ex_completed,
        failed=ex_failed,
        skipped=ex_skipped,
        remaining=max(0, ex_total - ex_finished),
    )

    update: dict = {"download": download, "extract": extract}
    status = view.status
    if status == "cancelled":
        # The bar stops where it was: cancelled is not done.
        update["progress"] = view.progress.model_copy(update={"stage": "done"})
        return view.model_copy(update=update)
    if view.item_count is not None and total > 0 and finished >= total and len(items) >= total:
        status = "completed" if succeeded == total else ("failed" if succeeded == 0 else "partial")
        update["status"] = status
        update["finished_at"] = event.occurred_at
        update["progress"] = Progress.model_construct(percent=100.0, stage="done")
        if status == "failed":
            update["error"] = first_error
        return view.model_copy(update=update)

    percent = view.progress.percent
    if total:
        raw = math.floor(1000.0 * fraction / total) / 10.0
        percent = max(percent, min(99.9, raw))
    if status in ("queued", "resolving"):
        stage = status
    elif download.remaining > 0 or not audio:
        stage = "downloading"
    else:
        stage = "extracting"
    update["progress"] = Progress.model_construct(percent=percent, stage=stage)
    return view.model_copy(update=update)
