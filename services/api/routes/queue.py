"""The queue: pause and resume every downloader at once, and what waits and runs."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, Parameter

from contracts.schedule import Schedule
from services.api.access import identity_of
from services.api.errors import error_responses, field_error
from services.api.hub import JobHub
from services.api.queue import QueueControl, QueueState

SCHEDULE_DESCRIPTION = (
    "Windows (days and wall-clock times in `timezone`; one whose `to` is before its `from` runs past midnight), what "
    "new downloads do outside them (`outside`: wait, or run at `slow_rate`), the bandwidth budget every downloader "
    "shares (`rate`, bytes a second with K/M/G in powers of 1024), caps on the bytes of a day (`daily_cap`, "
    "`site_caps`), and whether downloads running when a window closes pause (their partial files stay) or finish. "
    "Every downloader follows it at once; a job with `schedule: ignore` is not held by it. `GET /api/queue` shows "
    "what it means now (`schedule`)."
)


def _may_schedule(request: Request) -> str:
    identity = identity_of(request)
    if identity.role != "admin":
        raise field_error(403, "client", "forbidden", "the download schedule is for admins")
    return str(identity.user)


class QueueController(Controller):
    path = "/api/queue"
    tags = ["queue"]

    @get("/", summary="Paused or not, jobs per status, items waiting per priority, what each worker runs")
    async def get_queue(self, queue: NamedDependency[QueueControl], hub: NamedDependency[JobHub]) -> QueueState:
        return await queue.state(hub.index.counts(), hub.index.unfinished_items())

    @post(
        "/pause",
        status_code=200,
        summary="Pause the queue: no worker takes a new item; running items finish (or stop, with ?now=true)",
        responses=error_responses(401, 422),
        description="With now=true the running downloads stop and keep their partial files; they go on from them "
        "when the queue is resumed.",
    )
    async def pause(
        self,
        queue: NamedDependency[QueueControl],
        hub: NamedDependency[JobHub],
        now: Annotated[bool, Parameter(description="also stop the running downloads (they resume later)")] = False,
    ) -> QueueState:
        await queue.set_paused(True, now)
        return await queue.state(hub.index.counts(), hub.index.unfinished_items())

    @post("/resume", status_code=200, summary="Resume the queue", responses=error_responses(401))
    async def resume(self, queue: NamedDependency[QueueControl], hub: NamedDependency[JobHub]) -> QueueState:
        await queue.set_paused(False)
        return await queue.state(hub.index.counts(), hub.index.unfinished_items())

    @post(
        "/cooldowns/{site:str}/resume",
        status_code=200,
        summary="End a site's cool-down now: its items start and its subscriptions are checked again",
        responses=error_responses(401, 404, 422),
        description="A cool-down starts by itself when a site answers 429, a bot check or a burst of 403s "
        "(TUBEFLOW_SITE_COOLDOWN). Ending it early keeps its level: if the site pushes back again, the next one "
        "lasts twice as long. Recorded as `site.resumed` on TUBEFLOW_SYSTEM.",
    )
    async def resume_site(
        self, queue: NamedDependency[QueueControl], hub: NamedDependency[JobHub], site: FromPath[str]
    ) -> QueueState:
        name = site.strip().lower().removeprefix("www.")
        if not name or len(name) > 253 or not all((c.isascii() and c.isalnum()) or c in "-._:[]" for c in name):
            raise field_error(422, "site", "invalid", "not a site name (e.g. youtube.com)")
        if await queue.cooldowns.resume(name) is None:
            raise field_error(404, "site", "not_cooling", f"{name} is not cooling down")
        return await queue.state(hub.index.counts(), hub.index.unfinished_items())

    @get(
        "/schedule",
        summary="The download schedule in force (the defaults when none is: downloads run at any time, no budget)",
        description=SCHEDULE_DESCRIPTION,
        responses=error_responses(401),
    )
    async def get_schedule(self, queue: NamedDependency[QueueControl]) -> Schedule:
        return (await queue.schedule()).schedule or Schedule()

    @put(
        "/schedule",
        status_code=200,
        summary="Put a download schedule in force: windows, a bandwidth budget shared by every downloader, daily caps",
        description=SCHEDULE_DESCRIPTION,
        responses=error_responses(401, 403, 422),
    )
    async def put_schedule(self, request: Request, queue: NamedDependency[QueueControl], data: Schedule) -> Schedule:
        record = await queue.set_schedule(data, _may_schedule(request))
        assert record.schedule is not None
        return record.schedule

    @delete(
        "/schedule",
        status_code=200,
        summary="Remove the download schedule: downloads run at any time, without a budget or caps",
        responses=error_responses(401, 403),
    )
    async def delete_schedule(self, request: Request, queue: NamedDependency[QueueControl]) -> Schedule:
        await queue.set_schedule(None, _may_schedule(request))
        return Schedule()


ROUTES = [QueueController]
