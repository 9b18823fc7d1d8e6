"""Subscriptions: follow a channel, playlist or feed; each check makes one job per new entry (the scheduler does it)."""

from __future__ import annotations

import asyncio
import os
from datetime import date
from typing import Any, Callable

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, JSONBody, SkipValidation
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from contracts.subscriptions import (
    MAX_ITEMS_PER_CHECK,
    MAX_SUBSCRIPTIONS,
    SUBSCRIPTION_ID,
    SubscriptionCreatedData,
    SubscriptionInfo,
    SubscriptionPausedData,
    SubscriptionSettings,
    SubscriptionUpdatedData,
    SubscriptionView,
    TitleFilter,
    make_subscription_event,
    new_subscription_id,
    parse_interval,
)
from services.api.admission import Admission, invalid
from services.api.errors import error_responses, field_error
from services.api.ownership import actor, may_see
from services.api.requests import MAX_URL_LENGTH, JobOptions, JobRequest
from services.runtime.clock import utcnow
from services.runtime.settings import Settings
from services.runtime.subscriptions import Conflict, SubscriptionBook


def _title_filter(value: Any) -> Any:
    """A string is shorthand for one include pattern."""
    return {"include": [value]} if isinstance(value, str) else value


class _SubscriptionFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    interval: str | float | None = Field(
        default=None,
        description='between checks: "30m", "1h", "1d" or seconds (at least TUBEFLOW_SUBSCRIPTION_MIN_INTERVAL, 5 min)',
    )
    options: JobOptions | None = Field(default=None, description="the job fields of every job it makes, as for a job")
    preset: str | None = Field(default=None, max_length=64, description="a preset's name (its fields under options)")
    title_filter: TitleFilter | None = Field(
        default=None,
        description='which titles become jobs: {"include": [...], "exclude": [...]} of plain text (anywhere in '
        "the title) or globs (*, ?, [abc]), any case; a string is one include pattern. No regular expressions.",
    )
    since: date | None = Field(default=None, description="entries published before this day are left out")
    max_items_per_check: int | None = Field(default=None, ge=1, le=MAX_ITEMS_PER_CHECK)
    name: str | None = Field(default=None, max_length=200)

    _filter = field_validator("title_filter", mode="before")(lambda cls, v: _title_filter(v))


class SubscriptionRequest(_SubscriptionFields):
    url: str = Field(max_length=MAX_URL_LENGTH, description="a channel, playlist or feed (http or https)")
    interval: str | float | None = "1h"
    start: bool = Field(default=True, description="false: created paused")


class SubscriptionPatch(_SubscriptionFields):
    url: str | None = Field(default=None, max_length=MAX_URL_LENGTH)


class SubscriptionsController(Controller):
    path = "/api/subscriptions"
    tags = ["subscriptions"]

    @post("/", status_code=201, summary="Follow a channel, playlist or feed", responses=error_responses(401, 422))
    async def create(
        self,
        request: Request,
        data: JSONBody[SubscriptionRequest],
        subscriptions: NamedDependency[SkipValidation[SubscriptionBook]],
        admission: NamedDependency[SkipValidation[Admission]],
        settings: NamedDependency[SkipValidation[Settings]],
    ) -> Response[SubscriptionInfo]:
        if len(subscriptions.all()) >= MAX_SUBSCRIPTIONS:
            raise field_error(422, "url", "too_many", f"at most {MAX_SUBSCRIPTIONS} subscriptions")
        fields = await _settings(data, None, admission, settings, actor(request))
        sid = new_subscription_id()
        event = make_subscription_event(
            "created",
            sid,
            utcnow(),
            f"{sid}:created",
            SubscriptionCreatedData(**fields.model_dump(), start=data.start, owner=actor(request)),
        )
        view = await subscriptions.publish(event, None)
        return Response(view.public(), status_code=201, headers={"Location": f"/api/subscriptions/{sid}"})

    @get("/", summary="The subscriptions, newest first")
    async def list_subscriptions(
        self, request: Request, subscriptions: NamedDependency[SkipValidation[SubscriptionBook]]
    ) -> list[SubscriptionInfo]:
        return [view.public() for view in subscriptions.all() if may_see(request, view.owner)]

    @get("/{subscription_id:str}", summary="One subscription", responses=error_responses(401, 404))
    async def get_subscription(
        self,
        request: Request,
        subscription_id: FromPath[str],
        subscriptions: NamedDependency[SkipValidation[SubscriptionBook]],
    ) -> SubscriptionInfo:
        return _existing(subscriptions, subscription_id, request).public()

    @patch(
        "/{subscription_id:str}",
        summary="Change a subscription (the fields given; options or preset replace the job fields)",
        responses=error_responses(401, 404, 409, 422),
    )
    async def change(
        self,
        request: Request,
        subscription_id: FromPath[str],
        data: JSONBody[SubscriptionPatch],
        subscriptions: NamedDependency[SkipValidation[SubscriptionBook]],
        admission: NamedDependency[SkipValidation[Admission]],
        settings: NamedDependency[SkipValidation[Settings]],
    ) -> SubscriptionInfo:
        async def decide(view: SubscriptionView) -> Any:
            fields = await _settings(data, view, admission, settings, view.owner or actor(request))
            return make_subscription_event(
                "updated", view.id, utcnow(), os.urandom(16).hex(), SubscriptionUpdatedData(**fields.model_dump())
            )

        return (await _write(subscriptions, subscription_id, decide, request)).public()

    @delete(
        "/{subscription_id:str}", status_code=204, summary="Stop following", responses=error_responses(401, 404, 409)
    )
    async def delete_subscription(
        self,
        request: Request,
        subscription_id: FromPath[str],
        subscriptions: NamedDependency[SkipValidation[SubscriptionBook]],
    ) -> None:
        await _write(subscriptions, subscription_id, _simple("deleted"), request)

    @post(
        "/{subscription_id:str}/check",
        status_code=202,
        summary="Check now (the scheduler takes it within a second)",
        responses=error_responses(401, 404, 409),
    )
    async def check_now(
        self,
        request: Request,
        subscription_id: FromPath[str],
        subscriptions: NamedDependency[SkipValidation[SubscriptionBook]],
    ) -> SubscriptionInfo:
        return (await _write(subscriptions, subscription_id, _simple("check_requested"), request)).public()

    @post(
        "/{subscription_id:str}/pause",
        status_code=202,
        summary="Stop checking",
        responses=error_responses(401, 404, 409),
    )
    async def pause(
        self,
        request: Request,
        subscription_id: FromPath[str],
        subscriptions: NamedDependency[SkipValidation[SubscriptionBook]],
    ) -> SubscriptionInfo:
        return (
            await _write(subscriptions, subscription_id, _simple("paused", SubscriptionPausedData()), request)
        ).public()

    @post(
        "/{subscription_id:str}/resume",
        status_code=202,
        summary="Check again (at once, then on its interval)",
        responses=error_responses(401, 404, 409),
    )
    async def resume(
        self,
        request: Request,
        subscription_id: FromPath[str],
        subscriptions: NamedDependency[SkipValidation[SubscriptionBook]],
    ) -> SubscriptionInfo:
        return (await _write(subscriptions, subscription_id, _simple("resumed"), request)).public()


def _existing(book: SubscriptionBook, subscription_id: str, request: Request) -> SubscriptionView:
    """The subscription, if it exists and is the asker's (an admin's: any); 404 otherwise."""
    view = book.get(subscription_id) if SUBSCRIPTION_ID.fullmatch(subscription_id) else None
    if view is None or not may_see(request, view.owner):
        raise NotFoundException(f"no subscription {subscription_id}")
    return view


def _simple(kind: str, data: BaseModel | None = None) -> Callable[[SubscriptionView], Any]:
    async def decide(view: SubscriptionView) -> Any:
        return make_subscription_event(kind, view.id, utcnow(), os.urandom(16).hex(), data)

    return decide


async def _write(
    book: SubscriptionBook, subscription_id: str, decide: Callable[[SubscriptionView], Any], request: Request
) -> Any:
    """Decide on the subscription as read and publish; when it changed meanwhile (a check recorded), read again."""
    for _ in range(5):
        view = _existing(book, subscription_id, request)
        try:
            return await book.publish(await decide(view), view)
        except Conflict:
            await asyncio.sleep(0.1)  # the change that came between is being folded here
    raise field_error(409, "subscription_id", "busy", "the subscription kept changing; try again")


async def _settings(
    data: _SubscriptionFields, view: SubscriptionView | None, admission: Admission, settings: Settings, owner: str
) -> SubscriptionSettings:
    """The subscription's settings after ``data`` (over ``view``'s), each field checked; 422 naming the field."""
    given = data.model_dump(exclude_unset=True)
    old = view.settings if view is not None else None
    url = given.get("url") or (old.url if old else "")
    interval = old.interval if old else 3600.0
    if data.interval is not None and ("interval" in given or old is None):
        try:
            interval = parse_interval(data.interval)
        except ValueError as exc:
            raise field_error(422, "interval", "invalid", str(exc)) from None
        if interval < settings.subscription_min_interval:
            raise field_error(
                422,
                "interval",
                "too_short",
                f"at least {settings.subscription_min_interval:g} s (TUBEFLOW_SUBSCRIPTION_MIN_INTERVAL)",
            )
    job = old.job if old else None
    if job is None or "options" in given or "preset" in given or "url" in given:
        options = data.options.model_dump(exclude_unset=True) if data.options is not None else {}
        if old is not None and "options" not in given and "preset" not in given:
            # Only the URL changed: the job fields stay as they were (checked again against the new URL).
            options = old.job.model_dump(exclude={"options", "preset"}) | (
                old.job.options.model_dump(exclude_defaults=True, exclude={"cookies_owner"}) if old.job.options else {}
            )
        # Options or a preset given: they replace the job fields (the preset's under the options given).
        preset = given.get("preset", old.job.preset if old and "options" not in given else None)
        # Every job of a subscription skips what an earlier job downloaded: a re-check never downloads twice.
        fields = {**options, "skip_downloaded": True, "url": url, **({"preset": preset} if preset else {})}
        try:
            request = JobRequest.model_validate(fields)
        except ValidationError as exc:
            raise invalid(exc, lambda field: "url" if field == "url" else f"options.{field}") from None
        job = (await admission.check(request, user=owner)).template(settings.auto_start)
    merged = {
        "url": url,
        "interval": interval,
        "job": job,
        "title_filter": given["title_filter"] if "title_filter" in given else (old.title_filter if old else None),
        "since": given["since"] if "since" in given else (old.since if old else None),
        "max_items_per_check": data.max_items_per_check or (old.max_items_per_check if old else 50),
        "name": given["name"] if "name" in given else (old.name if old else None),
    }
    return SubscriptionSettings.model_validate(merged)


ROUTES = [SubscriptionsController]
