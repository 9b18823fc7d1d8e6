"""How a job follows from its items: counters, the bar, the status and the error, derived after every event.

Rules only; the sums over the items come from ``contracts.totals``, which keeps them cheap.
"""

from __future__ import annotations

from contracts import events as ev
from contracts.items import item_done, item_succeeded, wants_audio
from contracts.totals import UNIT, Totals, remember_totals, replace, totals_of, unless_same
from contracts.views import TERMINAL_STATUSES, JobView, Progress


def stamp(seq: int, event: ev.Envelope) -> dict:
    return {"seq": max(seq, event.seq), "updated_at": event.occurred_at}


def derive(view: JobView, event: ev.Envelope, fresh: bool = False) -> JobView:
    """Derive counters, percent and the job status from the items, and stamp the event. Runs after every event.
    ``fresh``: the view was made for this event and nobody holds it yet, so it is updated in place."""
    stamped = stamp(view.seq, event)
    if view.status in TERMINAL_STATUSES and view.status != "cancelled":
        return _finish(view, stamped, fresh)
    audio = wants_audio(view.mode)
    total = view.item_count or 0
    totals = totals_of(view, audio)
    download = _download_summary(view, totals, total)
    update: dict = {"download": download, "extract": _extract_summary(view, totals, total, audio), **stamped}
    if view.status == "cancelled":
        # The bar stops where it was: cancelled is not done.
        update["progress"] = replace(view.progress, {"stage": "done"})
    elif _all_items_finished(view, totals, total):
        update.update(_finished(view, totals, total, audio, event))
    else:
        update["progress"] = _running_progress(view, totals, total, audio, download.remaining)
    new = _finish(view, update, fresh)
    remember_totals(new, audio, totals)  # same items list: the totals still hold
    return new


def _download_summary(view: JobView, totals: Totals, total: int):  # noqa: ANN202 - a DownloadSummary
    counts = totals.counts
    finished = counts.downloads_completed + counts.downloads_failed + counts.downloads_skipped
    speed, eta = _speed_and_eta(view, totals)
    active = bool(totals.running)
    # Not validated (nor model_construct-ed): the fold made these values itself, and checking them again cost a third
    # of a fold. Unchanged summaries are kept as they are.
    return unless_same(
        view.download,
        {
            "status": _aggregate(
                finished, counts.downloads_failed + counts.downloads_skipped - counts.downloads_existing, total
            ),
            "total": total,
            "completed": counts.downloads_completed,
            "failed": counts.downloads_failed,
            "skipped": counts.downloads_skipped,
            "remaining": max(0, total - finished),
            "bytes_done": counts.bytes_done,
            "bytes_total": max(counts.bytes_total, counts.bytes_done),
            "speed": speed if active else None,
            "eta": eta if active else None,
        },
    )


def _speed_and_eta(view: JobView, totals: Totals) -> tuple[float, float | None]:
    """The summed speed of the running downloads, and the longest of their ETAs."""
    speed = 0.0
    eta: float | None = None
    for position in totals.running:
        download = view.items[position].download
        if download.speed:
            speed += download.speed
        if download.eta is not None:
            eta = download.eta if eta is None else max(eta, download.eta)
    return speed, eta


def _extract_summary(view: JobView, totals: Totals, total: int, audio: bool):  # noqa: ANN202 - an ExtractSummary
    counts = totals.counts
    ex_total = total if audio else 0
    finished = counts.extracts_completed + counts.extracts_failed + counts.extracts_skipped
    return unless_same(
        view.extract,
        {
            "status": _aggregate(
                finished, counts.extracts_failed + counts.extracts_skipped - counts.extracts_existing, ex_total
            )
            if audio
            else "none",
            "total": ex_total,
            "completed": counts.extracts_completed,
            "failed": counts.extracts_failed,
            "skipped": counts.extracts_skipped,
            "remaining": max(0, ex_total - finished),
        },
    )


def _all_items_finished(view: JobView, totals: Totals, total: int) -> bool:
    return view.item_count is not None and total > 0 and totals.counts.finished >= total and len(view.items) >= total


def _finished(view: JobView, totals: Totals, total: int, audio: bool, event: ev.Envelope) -> dict:
    """The job ends: completed when every item succeeded, failed when none did (with the first item's error)."""
    succeeded = totals.counts.succeeded
    status = "completed" if succeeded == total else ("failed" if succeeded == 0 else "partial")
    update: dict = {
        "status": status,
        "finished_at": event.occurred_at,
        "progress": unless_same(view.progress, {"percent": 100.0, "stage": "done"}),
    }
    if status == "failed":
        # The first item's error that has one (items skipped by a cancel have none).
        update["error"] = next(
            (
                item.error
                for item in view.items
                if item_done(item, audio) and not item_succeeded(item, audio) and item.error is not None
            ),
            ev.ErrorInfo(code="cancelled", message="cancelled on request") if view.status == "cancelled" else None,
        )
    return update


def _running_progress(view: JobView, totals: Totals, total: int, audio: bool, downloads_remaining: int) -> Progress:
    """The bar of a running job: the items' shares, never lower than it was, below 100 until the job ends."""
    percent = view.progress.percent
    if total:
        raw = (totals.counts.units * 1000 // (total * UNIT)) / 10.0
        percent = max(percent, min(99.9, raw))
    if view.status in ("queued", "resolving", "held"):
        stage = "resolving" if view.status == "resolving" else "queued"
    elif totals.counts.recording:
        stage = "recording"
    elif downloads_remaining > 0 or not audio:
        stage = "downloading"
    else:
        stage = "extracting"
    return unless_same(view.progress, {"percent": percent, "stage": stage})


def _aggregate(done: int, failed: int, total: int) -> str:
    if total == 0 or done < total:
        return "queued" if done == 0 else "running"
    if failed == 0:
        return "completed"
    return "failed" if failed == total else "partial"


def _finish(view: JobView, update: dict, fresh: bool) -> JobView:
    if not fresh:
        return replace(view, update)
    view.__dict__.update(update)
    return view
