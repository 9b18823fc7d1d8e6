"""The queue: pause and resume every downloader at once, and what waits and runs."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import Parameter

from services.api.errors import error_responses
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


ROUTES = [QueueController]
