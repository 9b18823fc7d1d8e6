"""A view that would not fit in one NATS message is not written as it is: the projector would fail on it forever and
stop every other job's views with it. It is cut instead, and the job marked failed with ``view_too_large``.

A cut view keeps the job's summary and the first items that fit; every event of the job is still in the stream
(`GET /api/jobs/{id}/events`). Once a view is cut, the projector folds nothing more into it (its events are skipped,
see ``Projector.fold``), so it stays as it was cut.
"""

from __future__ import annotations

from contracts.events import ErrorInfo
from contracts.views import VIEW_TOO_LARGE, JobView

# Room left in a message for the KV headers and the protocol's own.
HEADROOM = 8 * 1024


def is_cut(view: JobView | None) -> bool:
    return view is not None and view.error is not None and view.error.code == VIEW_TOO_LARGE


def writable(view: JobView, max_payload: int | None) -> tuple[JobView, bytes, int | None]:
    """The view and its bytes, cut to fit ``max_payload`` if need be; the third value is the size it had when it was
    cut (None when it fits as it is)."""
    data = view.model_dump_json().encode()
    if max_payload is None:
        return view, data, None
    limit = max_payload - HEADROOM
    if len(data) <= limit:
        return view, data, None
    size, total = len(data), len(view.items)
    keep = total
    while True:
        keep = max(0, min(keep - 1, int(keep * limit * 0.95 / len(data))))
        message = (
            f"the job's view grew to {size} bytes, more than one message may hold ({max_payload}); "
            f"it shows the first {keep} of its {total} items and the job is stopped (every event is in its /events)"
        )
        cut = view.model_copy(
            update={
                "items": view.items[:keep],
                "status": "failed",
                "error": ErrorInfo(code=VIEW_TOO_LARGE, message=message),
                "finished_at": view.finished_at or view.updated_at,
            }
        )
        data = cut.model_dump_json().encode()
        if len(data) <= limit or keep == 0:
            return cut, data, size
