"""Job controls: start a held job, change its priority, delete it, and the same for many jobs at once."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from pydantic import BaseModel, Field, StrictBool, field_validator

from contracts import events as ev
from contracts.decisions import Refusal
from contracts.views import JobStatus, JobView
from services.api.commands import JobCommands
from services.api.errors import ApiError, error_responses, field_error
from services.api.hub import JobHub
from services.api.ownership import actor, may_see, owner_filter
from services.api.reads import JobReads
from services.api.routes.jobs import _accepted, _existing
from services.api.search import MAX_QUERY

MAX_BULK_IDS = 1000
# A filter acts on at most this many jobs per request (the answer lists each); ask again for the rest.
MAX_BULK_MATCHES = 5000


class PriorityRequest(BaseModel):
    priority: ev.Priority


class BulkFilter(BaseModel):
    status: JobStatus | None = None
    q: str | None = Field(default=None, max_length=MAX_QUERY, description="in the title or URL, any case")


class BulkRequest(BaseModel):
    action: Literal["cancel", "retry", "start", "delete", "priority"]
    ids: list[Annotated[str, Field(max_length=64)]] | None = Field(default=None, max_length=MAX_BULK_IDS)
    filter: BulkFilter | None = None
    priority: ev.Priority | None = Field(default=None, description="for action priority")
    # Strict: the document says boolean, so 0 and "yes" are refused (schemathesis' negative data, issue 23).
    files: StrictBool = Field(default=False, description="for action delete: remove the jobs' files too")

    @field_validator("files", mode="before")
    @classmethod
    def _boolean(cls, value: object) -> object:
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value

    def refusal(self) -> ApiError | None:
        """What is wrong with the combination, naming the field (a model validator's error named `body`)."""
        if (self.ids is None) == (self.filter is None):
            return field_error(422, "ids" if self.ids is None else "filter", "invalid", "give either ids or filter")
        if self.action == "priority" and self.priority is None:
            return field_error(422, "priority", "missing", "action priority needs a priority")
        return None


class BulkResult(BaseModel):
    id: str
    ok: bool
    status: str | None = None
    code: str | None = None
    message: str | None = None


class BulkAnswer(BaseModel):
    action: str
    done: int
    refused: int
    not_found: int
    results: list[BulkResult]
    # True when a filter matched more than one request acts on.
    more: bool = False


async def _act(commands: JobCommands, view: JobView, request: BulkRequest, who: str) -> JobView | Refusal:
    action = request.action
    if action == "cancel":
        return await commands.cancel(view, who)
    if action == "retry":
        return await commands.retry(view, who)
    if action == "start":
        return await commands.start(view, who)
    if action == "priority":
        return await commands.prioritize(view, request.priority or "normal", who)
    return await commands.delete(view, request.files, actor=who)


class ControlsController(Controller):
    path = "/api/jobs"
    tags = ["jobs"]

    @post(
        "/{job_id:str}/start",
        status_code=202,
        summary="Start a held job (created with start: false)",
        responses=error_responses(401, 404, 409, 422),
        description="409 when the job has finished or is not held.",
    )
    async def start_job(
        self,
        request: Request,
        job_id: FromPath[str],
        reads: NamedDependency[JobReads],
        commands: NamedDependency[JobCommands],
    ) -> Response[JobView]:
        return _accepted(await commands.start(await _existing(reads, job_id, request), actor(request)), job_id)

    @post(
        "/{job_id:str}/priority",
        status_code=202,
        summary="Change a job's priority: its waiting items are taken before (or after) other jobs'",
        responses=error_responses(401, 404, 409, 422),
    )
    async def set_priority(
        self,
        request: Request,
        job_id: FromPath[str],
        data: JSONBody[PriorityRequest],
        reads: NamedDependency[JobReads],
        commands: NamedDependency[JobCommands],
    ) -> Response[JobView]:
        view = await _existing(reads, job_id, request)
        return _accepted(await commands.prioritize(view, data.priority, actor(request)), job_id)

    @post(
        "/bulk",
        status_code=200,
        summary="One action on many jobs: by ids, or by a filter",
        responses=error_responses(400, 401, 422),
        description="Each job's outcome is listed: done (with its new status), refused (409's code and reason) or "
        "not_found.",
    )
    async def bulk(
        self,
        request: Request,
        data: JSONBody[BulkRequest],
        reads: NamedDependency[JobReads],
        hub: NamedDependency[JobHub],
        commands: NamedDependency[JobCommands],
    ) -> BulkAnswer:
        if (refused := data.refusal()) is not None:
            raise refused
        more = False
        if data.ids is not None:
            ids = list(dict.fromkeys(data.ids))
        else:
            assert data.filter is not None
            found, cursor = hub.index.page(
                limit=MAX_BULK_MATCHES,
                status=data.filter.status,
                before=None,
                q=data.filter.q,
                owner=owner_filter(request),
            )
            ids, more = [s.id for s in found], cursor is not None
        results = []
        for job_id in ids:
            view = await reads.get(job_id)
            if view is None or not may_see(request, view.owner):
                results.append(BulkResult(id=job_id, ok=False, code="not_found", message=f"no job {job_id}"))
                continue
            outcome = await _act(commands, view, data, actor(request))
            if isinstance(outcome, Refusal):
                results.append(BulkResult(id=job_id, ok=False, code=outcome.code, message=outcome.message))
            else:
                results.append(BulkResult(id=job_id, ok=True, status=outcome.status))
        return BulkAnswer(
            action=data.action,
            done=sum(r.ok for r in results),
            refused=sum(not r.ok and r.code != "not_found" for r in results),
            not_found=sum(r.code == "not_found" for r in results),
            results=results,
            more=more,
        )


ROUTES = [ControlsController]
