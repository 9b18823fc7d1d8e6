"""The one pure fold: ``apply(view, event) -> view``.

The projector, ``tubeflow replay``, the API's first answer to a POST and the tests all call this function. It reads
no clock, does no I/O and knows no settings: every timestamp comes from the events. An event whose stream sequence
is not newer than the view's ``seq`` changes nothing, so redelivered events are harmless.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import singledispatch
from typing import Iterable

from contracts import events as ev
from contracts.views import (
    TERMINAL_STATUSES,
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
        return _replace(view, {"seq": max(view.seq, event.seq)})
    changed = _apply(event, view)
    # A view the handler just made is not seen by anyone yet, so the derived fields can be filled in in place.
    return _recompute(changed, event, fresh=changed is not view)


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
    return _replace(view, _stamped(view, event))


def _stamped(view: JobView, event: ev.Envelope) -> dict:
    return {"seq": max(view.seq, event.seq), "updated_at": event.occurred_at}


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
    return _replace(view, {"status": "resolving"})


@_apply.register
def _(event: ev.ResolvedEvent, view: JobView) -> JobView:
    data = event.data
    return _replace(
        view,
        {
            "status": "running",
            "kind": data.kind,
            "title": data.title or view.title,
            "item_count": data.item_count,
            "truncated": data.truncated,
        },
    )


@_apply.register
def _(event: ev.ResolveFailedEvent, view: JobView) -> JobView:
    return _replace(
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
    return _with_items(view, items, None, item, position)


@_apply.register
def _(event: ev.DownloadStartedEvent, view: JobView) -> JobView:
    def change(item: ItemView) -> ItemView:
        if item.download.status in _STEP_DONE:
            return item
        return _replace(
            item,
            {
                "status": "downloading",
                "attempts": max(item.attempts, event.data.attempt),
                "worker": event.data.worker,
                "download": _replace(item.download, {"status": "running"}),
            },
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
        return _replace(
            item,
            {
                "status": "downloading",
                "attempts": max(item.attempts, 1),
                "worker": data.worker,
                "download": _replace(
                    item.download,
                    {
                        "status": "running",
                        "percent": round(percent, 1),
                        "downloaded_bytes": data.downloaded_bytes,
                        "total_bytes": data.total_bytes,
                        "speed": data.speed,
                        "eta": data.eta,
                    },
                ),
            },
        )

    return _update_item(view, event, change)


@_apply.register
def _(event: ev.DownloadRetryingEvent, view: JobView) -> JobView:
    data = event.data

    def change(item: ItemView) -> ItemView:
        if item.download.status in _STEP_DONE:
            return item
        return _replace(
            item,
            {
                "status": "queued",
                "attempts": max(item.attempts, data.attempt),
                "worker": data.worker,
                "error": ev.ErrorInfo(code=data.code, message=data.message),
                "download": _replace(item.download, {"status": "queued", "speed": None, "eta": None}),
            },
        )

    return _update_item(view, event, change)


@_apply.register
def _(event: ev.DownloadCompletedEvent, view: JobView) -> JobView:
    data = event.data
    audio = wants_audio(view.mode)

    def change(item: ItemView) -> ItemView:
        if item.download.status in _STEP_DONE:
            return item
        return _replace(
            item,
            {
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
            },
        )

    return _update_item(view, event, change)


@_apply.register
def _(event: ev.DownloadFailedEvent, view: JobView) -> JobView:
    data = event.data

    def change(item: ItemView) -> ItemView:
        if item.download.status in _STEP_DONE:
            return item
        return _replace(
            item,
            {
                "status": "failed",
                "attempts": max(item.attempts, data.attempt),
                "worker": data.worker,
                "error": ev.ErrorInfo(code=data.code, message=data.message),
                "download": _replace(item.download, {"status": "failed", "speed": None, "eta": None}),
                "extract": _replace(item.extract, {"status": "skipped" if item.extract.status != "none" else "none"}),
            },
        )

    return _update_item(view, event, change)


@_apply.register
def _(event: ev.ExtractStartedEvent, view: JobView) -> JobView:
    def change(item: ItemView) -> ItemView:
        if item.extract.status in _STEP_DONE:
            return item
        return _replace(item, {"status": "extracting", "extract": _replace(item.extract, {"status": "running"})})

    return _update_item(view, event, change)


@_apply.register
def _(event: ev.ExtractProgressEvent, view: JobView) -> JobView:
    def change(item: ItemView) -> ItemView:
        if item.extract.status in _STEP_DONE:
            return item
        percent = round(min(100.0, max(0.0, event.data.percent)), 1)
        return _replace(
            item,
            {
                "status": "extracting",
                "extract": _replace(item.extract, {"status": "running", "percent": percent}),
            },
        )

    return _update_item(view, event, change)


@_apply.register
def _(event: ev.ExtractCompletedEvent, view: JobView) -> JobView:
    def change(item: ItemView) -> ItemView:
        if item.extract.status in _STEP_DONE:
            return item
        return _replace(
            item,
            {
                "status": "completed",
                "extract": ItemExtract(
                    status="completed",
                    percent=100.0,
                    file=event.data.file,
                    size=event.data.size,
                    reused=event.data.reused,
                ),
            },
        )

    return _update_item(view, event, change)


@_apply.register
def _(event: ev.ExtractFailedEvent, view: JobView) -> JobView:
    def change(item: ItemView) -> ItemView:
        if item.extract.status in _STEP_DONE:
            return item
        return _replace(
            item,
            {
                "status": "failed",
                "error": ev.ErrorInfo(code=event.data.code, message=event.data.message),
                "extract": _replace(item.extract, {"status": "failed"}),
            },
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
            download = _replace(download, {"status": "skipped", "speed": None, "eta": None})
        if extract.status not in _STEP_DONE and extract.status != "none":
            extract = _replace(extract, {"status": "skipped"})
        items.append(_replace(item, {"status": "skipped", "download": download, "extract": extract, "seq": event.seq}))
    return _replace(
        view,
        {
            "status": "cancelled",
            "finished_at": event.occurred_at,
            "error": ev.ErrorInfo(code="cancelled", message=event.data.reason or "cancelled on request"),
            "items": items,
        },
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
        return _replace(view, update)
    wanted = set(data.items)
    audio = wants_audio(view.mode)
    items = []
    for item in view.items:
        if item.id in wanted:
            item = _replace(
                item,
                {
                    "status": "queued",
                    "error": None,
                    "download": ItemDownload(),
                    "extract": ItemExtract(status="queued" if audio else "none"),
                    "seq": event.seq,
                },
            )
        items.append(item)
    update["items"] = items
    return _replace(view, update)


# --- helpers --------------------------------------------------------------------------------------------------

_set = object.__setattr__


def _replace(model, changes: dict):  # noqa: ANN001, ANN202 - any view model, same type back
    """``model.model_copy(update=changes)`` without pydantic's generic copy machinery (a third of a fold's time).

    Like model_copy, nothing is validated: the fold only puts values of the right types. Private attributes are
    caches derived from the fields (see `_Derived`), so a copy starts without them.
    """
    cls = model.__class__
    new = cls.__new__(cls)
    values = model.__dict__.copy()
    values.update(changes)
    _set(new, "__dict__", values)
    # The same set object: models here are frozen, so nothing ever changes it (and dumps never exclude unset fields).
    _set(new, "__pydantic_fields_set__", model.__pydantic_fields_set__)
    _set(new, "__pydantic_extra__", None)
    _set(new, "__pydantic_private__", None if model.__pydantic_private__ is None else {"_derived": None})
    return new


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
    # `new` was just made by `change` (it is not `old`): nobody else holds it yet.
    new.__dict__["seq"] = max(old.seq, event.seq)
    items = list(view.items)
    items[position] = new
    return _with_items(view, items, old, new, position)


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


# --- sums over the items ----------------------------------------------------------------------------------------
#
# The job's counters and percent are sums over its items. Walking every item after every event made a fold
# O(items) per event (a 1,000-item playlist: ~15,000 events x 1,000 items). Instead each view carries, as a cache,
# the sums for its item list, and an event that changes one item moves them by that item's difference. The sums are
# integers (an item's fraction in millionths), so moving them gives exactly what a full walk gives: the result does
# not depend on which views had the cache.

UNIT = 1_000_000  # an item's share of the bar, in millionths
# Positions in a contribution / sum vector.
_DL_COMPLETED, _DL_FAILED, _DL_SKIPPED, _EX_COMPLETED, _EX_FAILED, _EX_SKIPPED = range(6)
_FINISHED, _SUCCEEDED, _BYTES_DONE, _BYTES_TOTAL, _UNITS = range(6, 11)
_ZERO = (0,) * 11
_DL_SLOT = {"completed": _DL_COMPLETED, "failed": _DL_FAILED, "skipped": _DL_SKIPPED}
_EX_SLOT = {"completed": _EX_COMPLETED, "failed": _EX_FAILED, "skipped": _EX_SKIPPED}


def _contribution(item: ItemView, audio: bool) -> tuple[int, ...]:
    vector = [0] * 11
    download = item.download
    slot = _DL_SLOT.get(download.status)
    if slot is not None:
        vector[slot] = 1
    if audio:
        slot = _EX_SLOT.get(item.extract.status)
        if slot is not None:
            vector[slot] = 1
    vector[_BYTES_DONE] = download.downloaded_bytes
    vector[_BYTES_TOTAL] = download.total_bytes or 0
    if _item_done(item, audio):
        vector[_FINISHED] = 1
        vector[_SUCCEEDED] = 1 if _item_succeeded(item, audio) else 0
        vector[_UNITS] = UNIT
    else:
        vector[_UNITS] = round(_item_fraction(item, audio) * UNIT)
    return tuple(vector)


@dataclass(frozen=True, slots=True)
class _Sums:
    vector: tuple[int, ...]
    # Positions of the items whose download is running (for speed and eta), ascending.
    running: tuple[int, ...]

    @staticmethod
    def of(items: list[ItemView], audio: bool) -> "_Sums":
        vector = [0] * 11
        running = []
        for position, item in enumerate(items):
            for slot, value in enumerate(_contribution(item, audio)):
                vector[slot] += value
            if item.download.status == "running":
                running.append(position)
        return _Sums(tuple(vector), tuple(running))

    def moved(self, old: ItemView | None, new: ItemView, position: int, audio: bool) -> "_Sums":
        """The sums after the item at ``position`` changed from ``old`` to ``new`` (``old`` None: inserted)."""
        before = _ZERO if old is None else _contribution(old, audio)
        after = _contribution(new, audio)
        if before == after:
            vector = self.vector
        else:
            vector = tuple([total - b + a for total, b, a in zip(self.vector, before, after, strict=True)])
        running = list(self.running)
        if old is None:
            running = [p + 1 if p >= position else p for p in running]
        elif old.download.status == "running":
            running.remove(position)
        if new.download.status == "running":
            bisect.insort(running, position)
        return _Sums(vector, tuple(running))


class _Derived:
    """A view's cached sums, valid for one item list (checked by identity) and mode. Not part of the view's value:
    it equals any other, so views compare as their fields do."""

    __slots__ = ("items", "audio", "sums")

    def __init__(self, items: list[ItemView], audio: bool, sums: _Sums) -> None:
        self.items, self.audio, self.sums = items, audio, sums

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = None  # type: ignore[assignment]


def _cached_sums(view: JobView, audio: bool) -> _Sums | None:
    private = view.__pydantic_private__
    derived = private.get("_derived") if private else None
    if derived is not None and derived.items is view.items and derived.audio == audio:
        return derived.sums
    return None


def _remember_sums(view: JobView, audio: bool, sums: _Sums) -> None:
    if view.__pydantic_private__ is not None:
        view.__pydantic_private__["_derived"] = _Derived(view.items, audio, sums)


def _sums(view: JobView, audio: bool) -> _Sums:
    sums = _cached_sums(view, audio)
    if sums is None:
        sums = _Sums.of(view.items, audio)
        _remember_sums(view, audio, sums)
    return sums


def _with_items(view: JobView, items: list[ItemView], old: ItemView | None, new: ItemView, position: int) -> JobView:
    """The view with ``items``, where only ``position`` differs from the view's items (``old`` None: inserted)."""
    audio = wants_audio(view.mode)
    sums = _cached_sums(view, audio)
    changed = _replace(view, {"items": items})
    if sums is not None:
        _remember_sums(changed, audio, sums.moved(old, new, position, audio))
    return changed


def _recompute(view: JobView, event: ev.Envelope, fresh: bool = False) -> JobView:
    """Derive counters, percent and the job status from the items, and stamp the event. Runs after every event.
    ``fresh``: the view was made for this event and nobody holds it yet, so it is updated in place."""
    stamp = _stamped(view, event)
    if view.status in TERMINAL_STATUSES and view.status != "cancelled":
        return _finish(view, stamp, fresh)
    audio = wants_audio(view.mode)
    items = view.items
    total = view.item_count or 0
    sums = _sums(view, audio)
    vector = sums.vector

    speed = 0.0
    eta: float | None = None
    for position in sums.running:
        download = items[position].download
        if download.speed:
            speed += download.speed
        if download.eta is not None:
            eta = download.eta if eta is None else max(eta, download.eta)
    active = bool(sums.running)

    dl_completed, dl_failed, dl_skipped = vector[_DL_COMPLETED], vector[_DL_FAILED], vector[_DL_SKIPPED]
    ex_completed, ex_failed, ex_skipped = vector[_EX_COMPLETED], vector[_EX_FAILED], vector[_EX_SKIPPED]
    finished, succeeded = vector[_FINISHED], vector[_SUCCEEDED]
    bytes_done = vector[_BYTES_DONE]
    dl_finished = dl_completed + dl_failed + dl_skipped
    # Not validated (nor model_construct-ed): the fold made these values itself, and checking them again cost a third
    # of a fold. Unchanged summaries are kept as they are.
    download = _unless_same(
        view.download,
        {
            "status": _aggregate(dl_finished, dl_failed + dl_skipped, total),
            "total": total,
            "completed": dl_completed,
            "failed": dl_failed,
            "skipped": dl_skipped,
            "remaining": max(0, total - dl_finished),
            "bytes_done": bytes_done,
            "bytes_total": max(vector[_BYTES_TOTAL], bytes_done),
            "speed": speed if active else None,
            "eta": eta if active else None,
        },
    )
    ex_total = total if audio else 0
    ex_finished = ex_completed + ex_failed + ex_skipped
    extract = _unless_same(
        view.extract,
        {
            "status": _aggregate(ex_finished, ex_failed + ex_skipped, ex_total) if audio else "none",
            "total": ex_total,
            "completed": ex_completed,
            "failed": ex_failed,
            "skipped": ex_skipped,
            "remaining": max(0, ex_total - ex_finished),
        },
    )

    update: dict = {"download": download, "extract": extract, **stamp}
    status = view.status
    if status == "cancelled":
        # The bar stops where it was: cancelled is not done.
        update["progress"] = _replace(view.progress, {"stage": "done"})
        return _keep_sums(view, update, audio, sums, fresh)
    if view.item_count is not None and total > 0 and finished >= total and len(items) >= total:
        status = "completed" if succeeded == total else ("failed" if succeeded == 0 else "partial")
        update["status"] = status
        update["finished_at"] = event.occurred_at
        update["progress"] = _unless_same(view.progress, {"percent": 100.0, "stage": "done"})
        if status == "failed":
            update["error"] = next(
                (item.error for item in items if _item_done(item, audio) and not _item_succeeded(item, audio)), None
            )
        return _keep_sums(view, update, audio, sums, fresh)

    percent = view.progress.percent
    if total:
        raw = (vector[_UNITS] * 1000 // (total * UNIT)) / 10.0
        percent = max(percent, min(99.9, raw))
    if status in ("queued", "resolving"):
        stage = status
    elif download.remaining > 0 or not audio:
        stage = "downloading"
    else:
        stage = "extracting"
    update["progress"] = _unless_same(view.progress, {"percent": percent, "stage": stage})
    return _keep_sums(view, update, audio, sums, fresh)


def _keep_sums(view: JobView, update: dict, audio: bool, sums: _Sums, fresh: bool) -> JobView:
    new = _finish(view, update, fresh)
    _remember_sums(new, audio, sums)  # same items list: the sums still hold
    return new


def _finish(view: JobView, update: dict, fresh: bool) -> JobView:
    if not fresh:
        return _replace(view, update)
    view.__dict__.update(update)
    return view


def _unless_same(old, values: dict):  # noqa: ANN001, ANN202 - a summary model, same type back
    """``old`` if it already holds exactly ``values`` (all its fields), else a copy of it with them."""
    return old if old.__dict__ == values else _replace(old, values)
