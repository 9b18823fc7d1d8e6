"""The queue: pause and resume every downloader at once, and what waits and runs."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, Parameter

from services.api.errors import error_responses, field_error
from services.api.hub import JobHub
from services.api.queue import QueueControl, QueueState


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


ROUTES = [QueueController]
