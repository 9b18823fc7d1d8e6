"""Presets: named bundles of job fields (GET, PUT, DELETE); a job names one in `preset` and overrides what it likes."""

from __future__ import annotations

from typing import Annotated

from litestar import Request, delete, get, put
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, JSONBody, Parameter
from pydantic import BaseModel, ValidationError

from contracts.options import PROFILE_NAME
from contracts.presets import Preset
from services.api.errors import error_responses, field_error
from services.api.ownership import owner_filter
from services.api.presets import PresetBook
from services.api.requests import PresetRequest


class PresetList(BaseModel):
    presets: list[Preset]


def check_preset(name: str, fields: dict) -> None:
    """A preset's name and fields, by the rules of a job's fields; ValueError naming the problem."""
    if not PROFILE_NAME.fullmatch(name):
        raise ValueError("a preset name is a-z, 0-9, '-' and '_', at most 64")
    try:
        PresetRequest.model_validate(fields)
    except ValidationError as exc:
        raise ValueError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None


@get(
    "/api/presets",
    summary="List presets (shipped examples, the operator's file, everyone's saved ones and your own)",
    description="An admin sees every person's too (`owner` names whose).",
    tags=["presets"],
)
async def list_presets(request: Request, presets: NamedDependency[PresetBook]) -> PresetList:
    return PresetList(presets=presets.all(owner_filter(request)))


@put(
    "/api/presets/{name:str}",
    summary="Save a preset: the job fields it sets",
    description="The body holds any job fields but `url`, `playlist_items` and `preset` (they are checked as a job's "
    "are), and an optional `description`. Only the fields given are stored; a job naming the preset gets them unless "
    "it sets them itself. Shipped examples and presets from TUBEFLOW_PRESETS_FILE can't be changed (409). "
    "A person's preset is their own (seen and used by them only); an admin's is everyone's.",
    tags=["presets"],
    status_code=200,
    responses=error_responses(401, 409, 422),
)
async def put_preset(
    name: FromPath[str], data: JSONBody[PresetRequest], presets: NamedDependency[PresetBook], request: Request
) -> Preset:
    if not PROFILE_NAME.fullmatch(name):
        raise field_error(422, "name", "invalid_preset", "a preset name is a-z, 0-9, '-' and '_', at most 64")
    saved = await presets.save(name, data.fields(), data.description, owner_filter(request))
    if isinstance(saved, str):
        raise field_error(409, "name", "read_only_preset" if "can't" in saved else "too_many_presets", saved)
    return saved


@delete(
    "/api/presets/{name:str}",
    summary="Delete a saved preset",
    tags=["presets"],
    status_code=204,
    responses=error_responses(401, 404, 409),
)
async def delete_preset(
    name: FromPath[str],
    presets: NamedDependency[PresetBook],
    request: Request,
    owner: Annotated[str | None, Parameter(description="admins: a person's preset", max_length=128)] = None,
) -> None:
    whose = owner_filter(request)
    deleted = await presets.delete(name, owner if whose is None and owner else whose)
    if deleted is False:
        raise NotFoundException(f"no preset {name}")
    if isinstance(deleted, str):
        raise field_error(409, "name", "read_only_preset", deleted)


ROUTES = [list_presets, put_preset, delete_preset]
