"""A value that would not fit in one NATS message is not written as it is: the projector would fail on it forever and
stop every other job's views with it. The view is cut instead, and the job marked failed with ``view_too_large``.

With the items stored in pages (``runtime.nats.views``) and text capped in the contracts, no value should ever come
near the limit (a page of 100 items with every field at its cap is ~650 KB); this is the floor under that. A cut view
keeps the job's summary and the items of the pages before the one that did not fit; every event of the job is still
in the stream (`GET /api/jobs/{id}/events`). Once a view is cut, the projector folds nothing more into it (its events
are skipped, see ``Projector.fold``), so it stays as it was cut.
"""

from __future__ import annotations

from contracts.events import ErrorInfo
from contracts.views import VIEW_TOO_LARGE, JobView


def is_cut(view: JobView | None) -> bool:
    return view is not None and view.error is not None and view.error.code == VIEW_TOO_LARGE


def cut(view: JobView, size: int, keep: int) -> JobView:
    """The view failed with ``view_too_large``, its first ``keep`` items kept."""
    message = (
        f"a stored part of the job's view grew to {size} bytes, more than one message may hold; the view shows its "
        f"first {keep} of {len(view.items)} items and the job is stopped (every event is in its /events)"
    )
    return view.model_copy(
        update={
            "items": view.items[:keep],
            "status": "failed",
            "error": ErrorInfo(code=VIEW_TOO_LARGE, message=message),
            "finished_at": view.finished_at or view.updated_at,
        }
    )
