"""yt-dlp at run time (issue 27): which version is in force and which each downloader runs, an update to the newest
(or a named) version from the operator's package index, and a rollback. An update needs the API token; without one
configured it is taken from loopback only."""

from __future__ import annotations

import ipaddress

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from pydantic import BaseModel, ConfigDict, Field

from contracts.system import EngineUpdatedData, EngineUpdateFailedData
from services.api.access import identity_of
from services.api.errors import error_responses, field_error
from services.api.queue import QueueControl
from services.engine.updates import VERSION, UpdateFailed, bundled_version, installed
from services.engine.versions import (
    NothingToRollBack,
    UpdateRunning,
    in_force,
    last_failure,
    one_at_a_time,
    rollback,
    update,
)
from services.runtime.settings import Settings, worker_identity


class ProcessEngine(BaseModel):
    worker: str
    engine: str | None = Field(description="the yt-dlp version its new downloads run (its heartbeat)")


class EngineState(BaseModel):
    in_force: str = Field(description="the yt-dlp version every downloader and scheduler runs new work on")
    previous: str | None = Field(description="what POST /api/engine/rollback returns to (null: nothing)")
    bundled: str = Field(description="the yt-dlp this tubeflow was installed with")
    installed: list[str] = Field(description="versions installed in this API's TUBEFLOW_ENGINE_DIR")
    processes: list[ProcessEngine] = Field(description="each downloader process and the version it runs")
    last_failure: EngineUpdateFailedData | None = None
    auto_update: str = Field(description="TUBEFLOW_YTDLP_AUTO_UPDATE")


class UpdateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(
        default=None, pattern=VERSION.pattern, description="the version to install (null: the newest on the index)"
    )


def _may_update(request: Request, settings: Settings) -> None:
    """An admin may change the engine; without authentication (TUBEFLOW_AUTH none), only a request from this
    machine."""
    if settings.auth_mode() != "none":
        if identity_of(request).role != "admin":
            raise field_error(403, "client", "forbidden", "updating yt-dlp is for admins")
        return
    host = request.client.host if request.client else ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise field_error(
            403, "client", "forbidden", "updating yt-dlp needs TUBEFLOW_API_TOKEN, or a request from this machine"
        )


class EngineController(Controller):
    path = "/api/engine"
    tags = ["engine"]

    @get("/", summary="The yt-dlp version in force, the one each downloader runs, and the last failed update")
    async def state(self, queue: NamedDependency[QueueControl], settings: NamedDependency[Settings]) -> EngineState:
        current = await in_force(queue.js)
        workers = await queue.worker_states()
        return EngineState(
            in_force=current.version if current is not None else bundled_version(),
            previous=current.previous if current is not None else None,
            bundled=bundled_version(),
            installed=sorted(installed(settings.engine_root())),
            processes=[ProcessEngine(worker=w.worker, engine=w.engine) for w in workers],
            last_failure=await last_failure(queue.js),
            auto_update=settings.ytdlp_auto_update,
        )

    @post(
        "/update",
        status_code=200,
        summary="Install yt-dlp (the newest, or `version`) from the package index, check it, and put it in force",
        description="The install goes into a folder of its own under the data dir and is checked (its version, a "
        "resolve and a download of a clip served on loopback) before anything runs it; every downloader and "
        "scheduler then switches at its next idle moment (items running finish on their version). A failure is "
        "recorded as `engine.update_failed` and answered 422 naming it; nothing changes.",
        responses=error_responses(401, 403, 409, 422),
    )
    async def update(
        self,
        request: Request,
        queue: NamedDependency[QueueControl],
        settings: NamedDependency[Settings],
        data: UpdateRequest | None = None,
    ) -> EngineUpdatedData:
        _may_update(request, settings)
        version = data.version if data is not None else None
        try:
            return await one_at_a_time(update(queue.js, settings.engine_root(), worker_identity(settings), version))
        except UpdateRunning as exc:
            raise field_error(409, "version", "update_running", str(exc)) from exc
        except UpdateFailed as exc:
            raise field_error(422, "version", "update_failed", str(exc)[:1500]) from exc

    @post(
        "/rollback",
        status_code=200,
        summary="Put the version before the one in force back in force",
        responses=error_responses(401, 403, 409, 422),
    )
    async def rollback(
        self, request: Request, queue: NamedDependency[QueueControl], settings: NamedDependency[Settings]
    ) -> EngineUpdatedData:
        _may_update(request, settings)
        try:
            return await one_at_a_time(rollback(queue.js, settings.engine_root(), worker_identity(settings)))
        except UpdateRunning as exc:
            raise field_error(409, "version", "update_running", str(exc)) from exc
        except NothingToRollBack as exc:
            raise field_error(409, "version", "nothing_to_roll_back", str(exc)) from exc
        except UpdateFailed as exc:
            raise field_error(422, "version", "update_failed", str(exc)[:1500]) from exc


ROUTES = [EngineController]
