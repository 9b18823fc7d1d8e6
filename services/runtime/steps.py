"""What every worker handler shares: publishing a step's events (``Emitter``), and running a job's step under a
cancel token (``run_cancellable``): a job's cancel stops it where it is, a shutdown hands it back to the stream."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Awaitable, Callable

from contracts import events as ev
from services.runtime.cancellation import Aborted, Cancellations, CancelToken
from services.runtime.clock import utcnow
from services.runtime.nats import Publisher
from services.runtime.nats.work import HANDBACK_DELAY, HandedBack, RetryLater

log = logging.getLogger("tubeflow.steps")


@dataclass
class Emitter:
    """Publishes one event of a job (or of one of its items), stamped now unless told when it happened."""

    publisher: Publisher
    now: Callable[[], datetime] = field(default=utcnow)

    async def emit(
        self,
        event_type: str,
        job_id: str,
        data: ev.Payload,
        event_id: str,
        item: str | None = None,
        occurred_at: datetime | None = None,
    ) -> None:
        await self.publisher.publish(
            ev.make_event(
                event_type,
                job_id=job_id,
                item_id=item,
                data=data,
                occurred_at=occurred_at or self.now(),
                event_id=event_id,
            )
        )


async def run_cancellable(
    cancellations: Cancellations,
    job_id: str,
    step: Callable[[CancelToken], Awaitable[None]],
    *,
    what: str,
    on_cancelled: Callable[[], None] = lambda: None,
    kind: str = "",
    on_paused: Callable[[str], Awaitable[None]] | None = None,
) -> None:
    """Run ``step`` with a token of the job, unless the job is already cancelled.

    A cancel (now, or before the step began) ends the step quietly after ``on_cancelled`` (e.g. removing partial
    files): the job's `cancel.requested` settles its state. A shutdown raises RetryLater, so the message goes back to
    the stream and another worker (or this one, started again) picks it up where the files are. A pause of the queue
    (reason "paused") or the download schedule (reason "schedule": a window closed, a daily cap) hands it back too,
    after ``on_paused`` (which says so in an event); its files stay.
    """
    if await cancellations.is_cancelled(job_id):
        log.info("skipping %s of cancelled job %s", what, job_id)
        return
    token = cancellations.token(job_id, kind)
    try:
        if token.reason is not None:
            raise Aborted(token.reason)
        await step(token)
    except Aborted as exc:
        if exc.reason == "shutdown":
            raise RetryLater(HANDBACK_DELAY, "handed back at shutdown") from exc
        if exc.reason in ("paused", "schedule"):
            if on_paused is not None:
                await on_paused(exc.reason)
            raise HandedBack(HANDBACK_DELAY, f"handed back: {exc.reason}") from exc
        on_cancelled()
        log.info("%s of job %s stopped: job cancelled", what, job_id)
    finally:
        cancellations.release(token)
