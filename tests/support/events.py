"""Event histories written by hand, for tests and benchmarks."""

from __future__ import annotations

from datetime import datetime, timedelta

from contracts import events as ev
from contracts.ids import step_event_id

Step = tuple[str, ev.Payload, str | None]  # event type, payload, item id


def events_of(
    job: str, steps: list[Step], *, start: datetime, spacing: timedelta = timedelta(0), numbered: bool = False
) -> list[ev.Envelope]:
    """One event per step, ``spacing`` apart from ``start``. Ids are the step ids the services use; ``numbered``
    appends the step's position, for histories that repeat a step (several progress reports of one item)."""
    return [
        ev.make_event(
            kind,
            job_id=job,
            item_id=item,
            data=data,
            occurred_at=start + n * spacing,
            event_id=f"{step_event_id(job, kind, item)}:{n}" if numbered else step_event_id(job, kind, item),
        )
        for n, (kind, data, item) in enumerate(steps)
    ]
