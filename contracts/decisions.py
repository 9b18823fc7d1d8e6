"""What a job command may do, decided from the job's view alone: pure functions that return the events to publish
or a refusal. The API's routes only translate the answer to HTTP; the clock is passed in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from contracts import events as ev
from contracts.ids import step_event_id
from contracts.views import JobView


@dataclass(frozen=True)
class Refusal:
    """The command does not apply to the job as it is; ``code`` is stable, ``message`` says why to a person."""

    code: str
    message: str


def plan_cancel(view: JobView, now: datetime) -> list[ev.Envelope] | Refusal:
    """Cancel a job that has not ended: one `cancel.requested` (its id is fixed, so a second cancel is a duplicate)."""
    if view.terminal:
        return Refusal("already_finished", f"the job is {view.status}")
    return [
        ev.make_event(
            "cancel.requested",
            job_id=view.id,
            data=ev.CancelRequested(reason="cancelled on request"),
            occurred_at=now,
            event_id=step_event_id(view.id, "cancel.requested"),
        )
    ]


def plan_retry(view: JobView, now: datetime) -> list[ev.Envelope] | Refusal:
    """Run the failed (and skipped) items of a finished job again, or a job that never resolved from the start.

    The first event is the `retry.requested` that starts the new round; the rest queue its work: one `requested`
    when the job resolves again, else one `item.queued` per item run again.
    """
    if not view.terminal:
        return Refusal("not_finished", f"the job is {view.status}; retry it once it has finished")
    if view.status == "cancelled":
        return Refusal("cancelled", "a cancelled job is not run again; submit it anew")
    if view.status == "completed":
        return Refusal("nothing_to_retry", "every item of the job succeeded")
    rnd = view.retries + 1
    items = [i for i in view.items if i.status in ("failed", "skipped")]
    resolve = not view.items
    retry = ev.make_event(
        "retry.requested",
        job_id=view.id,
        data=ev.RetryRequested(round=rnd, items=[i.id for i in items], resolve=resolve),
        occurred_at=now,
        event_id=step_event_id(view.id, "retry.requested", round=rnd),
    )
    if resolve:
        again = ev.Requested(
            url=view.url,
            mode=view.mode,
            audio_format=view.audio_format,
            format=view.format,
            playlist_items=view.playlist_items,
            round=rnd,
            options=view.options,
            preset=view.preset,
            priority=view.priority,
        )
        return [
            retry,
            ev.make_event(
                "requested",
                job_id=view.id,
                data=again,
                occurred_at=now,
                event_id=step_event_id(view.id, "requested", round=rnd),
            ),
        ]
    queued = [
        ev.item_queued(
            view.id,
            item.id,
            index=item.index,
            url=item.url,
            title=item.title,
            mode=view.mode,
            audio_format=view.audio_format,
            format=view.format,
            round=rnd,
            occurred_at=now,
            options=view.options,
            playlist_title=view.title if view.kind == "playlist" else None,
            priority=view.priority,
        )
        for item in items
    ]
    return [retry, *queued]


def plan_start(view: JobView, now: datetime) -> list[ev.Envelope] | Refusal:
    """Start a held job: one `start.requested` (its id is fixed: a second start is a duplicate)."""
    if view.terminal:
        return Refusal("already_finished", f"the job is {view.status}")
    if not view.held:
        return Refusal("not_held", "the job is not held: it started already")
    return [
        ev.make_event(
            "start.requested",
            job_id=view.id,
            data=ev.StartRequested(),
            occurred_at=now,
            event_id=step_event_id(view.id, "start.requested"),
        )
    ]


def plan_priority(view: JobView, priority: str, now: datetime, event_id: str) -> list[ev.Envelope] | Refusal:
    """Change the priority of a job's waiting items."""
    if view.terminal:
        return Refusal("already_finished", f"the job is {view.status}: nothing of it waits")
    return [
        ev.make_event(
            "priority.changed",
            job_id=view.id,
            data=ev.PriorityChanged(priority=priority),  # type: ignore[arg-type]
            occurred_at=now,
            event_id=event_id,
        )
    ]


def plan_delete(view: JobView, files: bool, now: datetime, reason: str = "requested") -> list[ev.Envelope]:
    """Delete a job: a running one is cancelled first (its work stops), then `job.deleted`."""
    cancel = plan_cancel(view, now)
    deleted = ev.make_event(
        "job.deleted",
        job_id=view.id,
        data=ev.JobDeleted(files=files, reason=reason),
        occurred_at=now,
        event_id=step_event_id(view.id, "job.deleted"),
    )
    return [*cancel, deleted] if isinstance(cancel, list) else [deleted]
