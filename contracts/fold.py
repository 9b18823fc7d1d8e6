"""The one pure fold: ``apply(view, event) -> view``.

The projector, ``tubeflow replay``, the API's first answer to a POST and the tests all call this function. It reads
no clock, does no I/O and knows no settings: every timestamp comes from the events. An event whose stream sequence
is not newer than the view's ``seq`` changes nothing, so redelivered events are harmless.

This module holds the rules, one handler per event type. After every event, ``contracts.derive`` computes the job's
counters, bar and status from its items; how that stays fast (cheap copies, sums over the items moved by one item's
difference) is in ``contracts.totals``.
"""

from __future__ import annotations

from functools import singledispatch
from typing import Callable, Iterable, Literal

from contracts import events as ev
from contracts.derive import derive, stamp
from contracts.fold_controls import CONTROLS, stopped
from contracts.items import STEP_DONE, download_percent, postprocess_label, postprocess_overall, wants_audio
from contracts.totals import replace, with_items
from contracts.views import (
    ExtractSummary,
    ItemDownload,
    ItemExtract,
    ItemView,
    JobView,
    Progress,
)


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
            return replace(view, stamp(view.seq, event))
    elif view.deleted_at is not None:
        # A deleted job stays deleted: whatever comes after only advances the sequence.
        return replace(view, {"seq": max(view.seq, event.seq)})
    elif view.terminal and not isinstance(
        event, (ev.RequestedEvent, ev.RetryRequestedEvent, ev.JobDeletedEvent, ev.ExistingDeletedEvent)
    ):
        # A finished job is final; late events (a straggling progress report) only advance the sequence.
        return replace(view, {"seq": max(view.seq, event.seq)})
    changed = _apply(event, view)
    # A view the handler just made is not seen by anyone yet, so the derived fields can be filled in in place.
    return derive(changed, event, fresh=changed is not view)


def fold(events: Iterable[ev.Envelope], view: JobView | None = None) -> JobView | None:
    for event in events:
        view = apply(view, event)
    return view


def apply_or_set_aside(view: JobView | None, event: ev.Envelope) -> tuple[JobView | None, str | None]:
    """``apply``, for readers of a stream that must go on whatever it holds: the view after ``event``, or the view as
    it was and the reason the event was set aside. The fold is total (a property test folds any event the schema
    admits), so the reason is a bug's; every reader sets such an event aside the same way, so they still agree."""
    try:
        return apply(view, event), None
    except Exception as exc:  # noqa: BLE001 - whatever a rule raises, one stored event must not stop a reader
        return view, f"{type(exc).__name__}: {exc}"[:500]


def _new_job(event: ev.RequestedEvent) -> JobView:
    data = event.data
    return JobView(
        id=event.job_id,
        url=data.url,
        mode=data.mode,
        audio_format=data.audio_format,
        format=data.format,
        playlist_items=data.playlist_items,
        options=data.options,
        preset=data.preset,
        priority=data.priority,
        held=not data.start,
        title=data.title,
        owner=data.owner,
        created_at=event.occurred_at,
        updated_at=event.occurred_at,
        extract=ExtractSummary(status="queued" if wants_audio(data.mode) else "none"),
    )


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
    return replace(view, {"status": "resolving"})


@_apply.register
def _(event: ev.ResolvedEvent, view: JobView) -> JobView:
    data = event.data
    return replace(
        view,
        {
            "status": "held" if view.held else "running",
            "kind": data.kind,
            # A title the request brought (a feed entry's) is better than one a resolve guesses from a file name.
            "title": view.title or data.title,
            "item_count": data.item_count,
            "truncated": data.truncated,
        },
    )


@_apply.register
def _(event: ev.ResolveFailedEvent, view: JobView) -> JobView:
    return replace(
        view,
        {
            "status": "failed",
            "error": ev.ErrorInfo(code=event.data.code, message=event.data.message),
            "finished_at": event.occurred_at,
            "progress": Progress(percent=100.0, stage="done"),
        },
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
    return with_items(view, items, None, item, position)


@_apply.register
def _(event: ev.DownloadStartedEvent, view: JobView) -> JobView:
    def started(item: ItemView) -> dict:
        return {
            "status": "downloading",
            "attempts": max(item.attempts, event.data.attempt),
            "worker": event.data.worker,
            "waiting": None,
            "download": replace(item.download, {"status": "running"}),
        }

    return _change_step(view, event, "download", started)


@_apply.register
def _(event: ev.DownloadWaitingEvent, view: JobView) -> JobView:
    data = event.data

    def waiting(item: ItemView) -> dict:
        if item.download.status == "running" and item.status == "downloading":
            # Stopped where it was (the queue paused now): queued again, its bytes kept for the next start.
            return {
                "status": "queued",
                "worker": data.worker,
                "waiting": ev.WaitingInfo(code=data.code, message=data.message, until=data.until),
                "download": replace(item.download, {"status": "queued", "speed": None, "eta": None}),
            }
        if item.download.status != "queued":
            return {}
        return {
            "worker": data.worker,
            "waiting": ev.WaitingInfo(code=data.code, message=data.message, until=data.until),
        }

    return _change_step(view, event, "download", waiting)


@_apply.register
def _(event: ev.ItemSkippedEvent, view: JobView) -> JobView:
    data = event.data

    def skipped(item: ItemView) -> dict:
        return {
            "status": "skipped",
            "worker": data.worker,
            "waiting": None,
            "error": None,
            "download": replace(item.download, {"status": "skipped", "existing": data.existing, "speed": None}),
            "extract": replace(item.extract, {"status": "skipped"}) if item.extract.status != "none" else item.extract,
        }

    return _change_step(view, event, "download", skipped)


@_apply.register
def _(event: ev.ExistingDeletedEvent, view: JobView) -> JobView:
    # Said of a skipped item after its job ended: a change of that item only, never of the job's counts or status.
    position = None if event.item_id is None else _find(view, event.item_id)
    if position is None:
        return view
    old = view.items[position]
    if old.download.status != "skipped" or old.download.existing != event.data.file or old.download.existing_deleted:
        return view
    return _put_item(view, event, position, {"download": replace(old.download, {"existing_deleted": True})})


@_apply.register
def _(event: ev.DownloadProgressEvent, view: JobView) -> JobView:
    data = event.data

    def progressed(item: ItemView) -> dict:
        if data.recorded_seconds is not None:
            return _recording(item, data)
        return {
            "status": "downloading",
            "attempts": max(item.attempts, 1),
            "worker": data.worker,
            "download": replace(
                item.download,
                {
                    "status": "running",
                    "percent": download_percent(data, item.download.percent),
                    "downloaded_bytes": data.downloaded_bytes,
                    "total_bytes": data.total_bytes,
                    "speed": data.speed,
                    "eta": data.eta,
                    "stream_index": data.stream_index,
                    "stream_count": data.stream_count,
                    "stream_kind": data.stream_kind,
                    "format_id": data.format_id,
                    "fragment_retries": data.fragment_retries or item.download.fragment_retries,
                },
            ),
        }

    return _change_step(view, event, "download", progressed)


def _recording(item: ItemView, data: ev.DownloadProgress) -> dict:
    """A live stream being recorded: bytes, seconds and speed, and no percent (there is no end to measure against);
    an item asked to stop stays `stopping` until its file is there."""
    return {
        "status": "stopping" if item.status == "stopping" else "recording",
        "attempts": max(item.attempts, 1),
        "worker": data.worker,
        "download": replace(
            item.download,
            {
                "status": "running",
                "percent": None,
                "downloaded_bytes": data.downloaded_bytes,
                "total_bytes": None,
                "speed": data.speed,
                "eta": None,
                "recorded_seconds": data.recorded_seconds,
            },
        ),
    }


@_apply.register
def _(event: ev.DownloadRetryingEvent, view: JobView) -> JobView:
    data = event.data

    def retrying(item: ItemView) -> dict:
        return {
            "status": "queued",
            "attempts": max(item.attempts, data.attempt),
            "worker": data.worker,
            "error": ev.ErrorInfo(code=data.code, message=data.message),
            "download": replace(item.download, {"status": "queued", "speed": None, "eta": None}),
        }

    return _change_step(view, event, "download", retrying)


@_apply.register
def _(event: ev.DownloadCompletedEvent, view: JobView) -> JobView:
    data = event.data
    audio = wants_audio(view.mode)

    def completed(item: ItemView) -> dict:
        stopped = data.stopped_early
        return {
            "status": "extracting" if audio and not stopped else "completed",
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
                fragment_retries=item.download.fragment_retries,
                recorded_seconds=item.download.recorded_seconds,
                stopped_early=stopped,
                files=data.files,
                chosen=data.chosen,
            ),
            # Post-processing is over with the download (all of its share counted).
            "postprocess": replace(item.postprocess, {"overall": 100.0})
            if item.postprocess.steps
            else item.postprocess,
            # What was recorded of a live stream that was stopped is kept as it is: no audio is made of it.
            **({"extract": ItemExtract(status="skipped")} if audio and stopped else {}),
        }

    return _change_step(view, event, "download", completed)


@_apply.register
def _(event: ev.DownloadFailedEvent, view: JobView) -> JobView:
    data = event.data

    def failed(item: ItemView) -> dict:
        return {
            "status": "failed",
            "attempts": max(item.attempts, data.attempt),
            "worker": data.worker,
            "error": ev.ErrorInfo(code=data.code, message=data.message),
            "download": replace(item.download, {"status": "failed", "speed": None, "eta": None}),
            "postprocess": stopped(item.postprocess, "failed"),
            "extract": replace(item.extract, {"status": "skipped" if item.extract.status != "none" else "none"}),
        }

    return _change_step(view, event, "download", failed)


@_apply.register
def _(event: ev.PostprocessStartedEvent, view: JobView) -> JobView:
    data = event.data

    def started(item: ItemView) -> dict:
        postprocess = item.postprocess
        return {
            "status": "processing",
            "postprocess": replace(
                postprocess,
                {
                    "status": "running",
                    "name": data.name,
                    "label": postprocess_label(data.name),
                    "percent": None,
                    "seconds": None,
                    "total_seconds": None,
                    "speed": None,
                    "step": data.step,
                    "steps": data.steps,
                    "overall": postprocess_overall(postprocess.overall, data.step, data.steps, None),
                },
            ),
        }

    return _change_step(view, event, "download", started)


@_apply.register
def _(event: ev.PostprocessProgressEvent, view: JobView) -> JobView:
    """The running post-processor's ffmpeg moved on: its percent never goes back while it runs (a report that
    arrives late, or for a step already over, changes nothing)."""
    data = event.data

    def progressed(item: ItemView) -> dict:
        postprocess = item.postprocess
        if postprocess.status != "running" or postprocess.name != data.name or postprocess.step != data.step:
            return {}
        percent = postprocess.percent
        if data.seconds is not None and data.total_seconds:
            percent = max(percent or 0.0, min(99.9, round(100.0 * data.seconds / data.total_seconds, 1)))
        return {
            "postprocess": replace(
                postprocess,
                {
                    "percent": percent,
                    "seconds": data.seconds,
                    "total_seconds": data.total_seconds,
                    "speed": data.speed,
                    "overall": postprocess_overall(postprocess.overall, data.step, data.steps, percent),
                },
            )
        }

    return _change_step(view, event, "download", progressed)


@_apply.register
def _(event: ev.PostprocessCompletedEvent, view: JobView) -> JobView:
    def completed(item: ItemView) -> dict:
        postprocess = item.postprocess
        if postprocess.status != "running":  # a repeat of the report: counted already
            return {}
        changes: dict = {"status": "completed", "completed": postprocess.completed + 1, "speed": None}
        if postprocess.percent is not None:
            changes["percent"] = 100.0
        changes["overall"] = postprocess_overall(postprocess.overall, postprocess.step, postprocess.steps, 100.0)
        return {"postprocess": replace(postprocess, changes)}

    return _change_step(view, event, "download", completed)


@_apply.register
def _(event: ev.PostprocessFailedEvent, view: JobView) -> JobView:
    data = event.data

    def failed(item: ItemView) -> dict:
        return {
            "error": ev.ErrorInfo(code=data.code, message=data.message),
            "postprocess": replace(item.postprocess, {"status": "failed", "name": data.name}),
        }

    return _change_step(view, event, "download", failed)


@_apply.register
def _(event: ev.ExtractStartedEvent, view: JobView) -> JobView:
    def started(item: ItemView) -> dict:
        return {"status": "extracting", "extract": replace(item.extract, {"status": "running"})}

    return _change_step(view, event, "extract", started)


@_apply.register
def _(event: ev.ExtractProgressEvent, view: JobView) -> JobView:
    def progressed(item: ItemView) -> dict:
        percent = round(min(100.0, max(0.0, event.data.percent)), 1)
        return {"status": "extracting", "extract": replace(item.extract, {"status": "running", "percent": percent})}

    return _change_step(view, event, "extract", progressed)


@_apply.register
def _(event: ev.ExtractCompletedEvent, view: JobView) -> JobView:
    def completed(item: ItemView) -> dict:
        changes: dict = {
            "status": "completed",
            "extract": ItemExtract(
                status="completed",
                percent=100.0,
                file=event.data.file,
                size=event.data.size,
                reused=event.data.reused,
            ),
        }
        if event.data.source_removed:  # an audio job: the download is gone, the audio is the item's file
            changes["download"] = replace(item.download, {"file": None})
        return changes

    return _change_step(view, event, "extract", completed)


@_apply.register
def _(event: ev.ExtractFailedEvent, view: JobView) -> JobView:
    def failed(item: ItemView) -> dict:
        return {
            "status": "failed",
            "error": ev.ErrorInfo(code=event.data.code, message=event.data.message),
            "extract": replace(item.extract, {"status": "failed"}),
        }

    return _change_step(view, event, "extract", failed)


for _kind, _handler in CONTROLS.items():
    _apply.register(_kind)(_handler)


# --- one item -------------------------------------------------------------------------------------------------


def _change_step(
    view: JobView, event: ev.Envelope, step: Literal["download", "extract"], change: Callable[[ItemView], dict]
) -> JobView:
    """Apply ``change`` (the item's new field values; none: nothing changes) to the event's item, unless that item's
    ``step`` is already done in this run: a late or repeated report of a finished step changes nothing."""
    if event.item_id is None:
        return view
    position = _find(view, event.item_id)
    if position is None:
        return view
    old = view.items[position]
    if getattr(old, step).status in STEP_DONE:
        return view
    changes = change(old)
    if not changes:
        return view
    return _put_item(view, event, position, changes)


def _put_item(view: JobView, event: ev.Envelope, position: int, changes: dict) -> JobView:
    """The view with the item at ``position`` changed by ``changes`` (and stamped with the event's sequence)."""
    old = view.items[position]
    new = replace(old, changes)
    new.__dict__["seq"] = max(old.seq, event.seq)  # `new` was just made here: nobody else holds it yet
    items = list(view.items)
    items[position] = new
    return with_items(view, items, old, new, position)


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
