"""Cookie profiles: upload a Netscape cookies.txt under a name, list profiles (domains and dates only), delete one.
A job names a profile in `cookies`; the downloaders read it at download time (services/runtime/cookies.py)."""

from __future__ import annotations

import asyncio
from datetime import datetime

from litestar import Request, delete, get, put
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from pydantic import BaseModel, Field

from services.api.errors import error_responses, field_error
from services.api.ownership import owner_filter
from services.runtime.cookies import MAX_COOKIE_FILE, CookieFileError, CookieProfile, CookieStore


class CookieProfileView(BaseModel):
    """What is told about a profile: never a cookie's name or value."""

    name: str
    domains: list[str] = Field(description="the domains its cookies are for")
    cookies: int = Field(description="how many cookies it holds")
    expires: datetime | None = Field(description="the latest expiry among its cookies (null: session cookies only)")
    updated_at: datetime
    owner: str | None = Field(default=None, description="whose own profile it is (null: everyone's, an admin's)")


class CookieProfiles(BaseModel):
    profiles: list[CookieProfileView]


def _view(profile: CookieProfile) -> CookieProfileView:
    return CookieProfileView(
        name=profile.name,
        domains=profile.domains,
        cookies=profile.cookies,
        expires=profile.expires,
        updated_at=profile.updated_at,
        owner=profile.owner,
    )


@put(
    "/api/cookies/{profile:str}",
    summary="Store a cookie profile (a Netscape cookies.txt as the request body, at most 1 MiB)",
    description="The body is the file as browsers' cookie export extensions write it (`# Netscape HTTP Cookie File`, "
    "then one tab-separated line per cookie). Stored with mode 0600 under the data dir; the answer lists its domains, "
    "never a cookie. Replaces a profile of that name. A person's profile is their own (a job of theirs naming it "
    "uses it; nobody else sees it); an admin's is everyone's.",
    tags=["cookies"],
    status_code=200,
    request_max_body_size=MAX_COOKIE_FILE,
    responses=error_responses(401, 413, 415, 422),
    opt={"body_types": ("text/plain", "application/octet-stream")},
)
async def put_cookies(
    profile: FromPath[str], request: Request, cookie_store: NamedDependency[CookieStore]
) -> CookieProfileView:
    body = await request.body()
    try:
        stored = await asyncio.to_thread(cookie_store.put, profile, body, owner_filter(request))
    except CookieFileError as exc:
        field = "profile" if "profile name" in str(exc) else "body"
        raise field_error(422, field, "invalid_cookies", str(exc)) from None
    return _view(stored)


@get("/api/cookies", summary="List cookie profiles (names, domains, dates): everyone's and your own", tags=["cookies"])
async def list_cookies(request: Request, cookie_store: NamedDependency[CookieStore]) -> CookieProfiles:
    listed = await asyncio.to_thread(cookie_store.list, owner_filter(request))
    return CookieProfiles(profiles=[_view(p) for p in listed])


@delete(
    "/api/cookies/{profile:str}",
    summary="Delete a cookie profile",
    tags=["cookies"],
    status_code=204,
    responses=error_responses(401, 404, 422),
)
async def delete_cookies(profile: FromPath[str], request: Request, cookie_store: NamedDependency[CookieStore]) -> None:
    try:
        deleted = await asyncio.to_thread(cookie_store.delete, profile, owner_filter(request))
    except CookieFileError as exc:
        raise field_error(422, "profile", "invalid_cookies", str(exc)) from None
    if not deleted:
        raise NotFoundException(f"no cookie profile {profile}")


ROUTES = [put_cookies, list_cookies, delete_cookies]
