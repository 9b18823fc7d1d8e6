"""The page's session: its API token traded for a cookie, so the links and streams it builds carry no token."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Literal

from litestar import Request, Response, delete, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from pydantic import BaseModel

from services.api.access import SESSION_COOKIE, SESSION_SECONDS, identity_of, session_value, valid_session
from services.api.errors import error_responses
from services.runtime.settings import Settings


class Session(BaseModel):
    """When the session cookie just set expires (null: no token is configured, or the session was ended)."""

    expires_at: datetime | None


def _cookie(
    request: Request,
    value: str,
    max_age: int,
    key: str = SESSION_COOKIE,
    path: str = "/",
    samesite: Literal["strict", "lax"] = "strict",
) -> Cookie:
    """An HttpOnly cookie (Secure over https): the session's by default."""
    return Cookie(
        key=key,
        value=value,
        max_age=max_age,
        path=path,
        httponly=True,
        samesite=samesite,
        secure=request.url.scheme == "https",
    )


@post(
    "/api/session",
    summary="Trade the bearer token for a session cookie (read-only: media and event streams)",
    description="With `TUBEFLOW_API_TOKEN` set: an HttpOnly, SameSite=Strict cookie valid for 12 hours, "
    "taken on GET/HEAD of `/api/*` and `/media/*` instead of the token (state changes still need the bearer token). "
    "Without a token: no cookie (`expires_at` null).",
    status_code=200,
    tags=["session"],
    responses=error_responses(401),
)
async def open_session(request: Request, settings: NamedDependency[Settings]) -> Response[Session]:
    if settings.auth_mode() == "oidc":
        return await _renew_signed_in(request)
    if not settings.api_token or settings.auth_mode() != "token":
        return Response(Session(expires_at=None))  # no token, or a proxy signs every request in
    identity = identity_of(request)
    if identity.via != "token":
        # A person's token (personal or from TUBEFLOW_USERS_FILE): a session of theirs, read-only as the admin's is
        # (the page still sends the token for changes), ended with the token.
        value, record = await request.app.state.sessions.open(identity)
        response = Response(Session(expires_at=datetime.fromtimestamp(record.expires, timezone.utc)))
        response.set_cookie(_cookie(request, value, SESSION_SECONDS))
        return response
    expires = int(time.time()) + SESSION_SECONDS
    response = Response(Session(expires_at=datetime.fromtimestamp(expires, timezone.utc)))
    response.set_cookie(_cookie(request, session_value(settings.api_token, expires), SESSION_SECONDS))
    return response


@delete(
    "/api/session", summary="End the session cookie", status_code=200, tags=["session"], responses=error_responses(401)
)
async def close_session(request: Request, settings: NamedDependency[Settings]) -> Response[Session]:
    cookie = request.cookies.get(SESSION_COOKIE, "")
    await request.app.state.sessions.end(cookie)  # a sign-in's or a person's token's (no-op for the admin's)
    session_id = valid_session(settings.api_token, cookie) if settings.api_token and cookie else None
    if session_id is not None:
        # Ended everywhere, not only in this browser: a copy of the cookie reads nothing any more (it read for the
        # rest of its 12 hours, issue 23).
        await request.app.state.ended_sessions.end(session_id)
    response = Response(Session(expires_at=None))
    response.set_cookie(_cookie(request, "", 0))
    return response


async def _renew_signed_in(request: Request) -> Response[Session]:
    """TUBEFLOW_AUTH=oidc: the signed-in session, with a fresh secret once it is an hour old (rotation)."""
    book = request.app.state.sessions
    cookie = request.cookies.get(SESSION_COOKIE, "")
    record = book.find(cookie)
    if record is None:  # signed in with a token, not the cookie: nothing to renew
        return Response(Session(expires_at=None))
    rotated = await book.rotate(cookie)
    response = Response(
        Session(expires_at=datetime.fromtimestamp((rotated or (cookie, record))[1].expires, timezone.utc))
    )
    if rotated is not None:
        response.set_cookie(_cookie(request, rotated[0], int(rotated[1].expires - time.time())))
    return response


ROUTES = [open_session, close_session]
