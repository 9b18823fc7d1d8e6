"""Sign-in with an OpenID Connect provider (TUBEFLOW_AUTH=oidc): `GET /auth/login` sends the browser to the provider,
`GET /auth/callback` takes it back and opens a session, `POST /auth/logout` ends it."""

from __future__ import annotations

import re
import secrets
import time
from typing import Annotated

from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.params import Parameter
from litestar.response import Redirect
from pydantic import BaseModel, Field

from services.api.access import SESSION_COOKIE, RateLimiter, client_key
from services.api.errors import error_responses, field_error
from services.api.oidc import SignInError
from services.api.routes.session import _cookie
from services.api.sessions import LOGIN_SECONDS, SESSION_SECONDS, PendingLogin, digest
from services.runtime.settings import Settings

LOGIN_COOKIE = "tubeflow_login"
# Where a sign-in may return to: a path of this site, never another host (`//evil`, `/\\evil`).
LOCAL_PATH = re.compile(r"^/(?![/\\])[\x21-\x7e]{0,500}$")
MAX_PARAM = 2048


def _oidc(request: Request, settings: Settings):  # noqa: ANN202
    client = request.app.state.get("oidc")
    if settings.auth_mode() != "oidc" or client is None:
        raise field_error(404, "auth", "not_oidc", "sign-in with a provider is on only with TUBEFLOW_AUTH=oidc")
    return client


def _redirect_uri(request: Request, settings: Settings) -> str:
    return settings.oidc_redirect_url or f"{str(request.base_url).rstrip('/')}/auth/callback"


def _login_cookie(request: Request, value: str, max_age: int) -> Cookie:
    # Lax: the provider sends the browser back with a cross-site navigation, which a Strict cookie would miss.
    return _cookie(request, value, max_age, key=LOGIN_COOKIE, path="/auth/", samesite="lax")


@get(
    "/auth/login",
    summary="Sign in: to the OpenID Connect provider, and back to `next` (a path here)",
    tags=["auth"],
    responses=error_responses(400, 404, 429, 502),
)
async def login(
    request: Request,
    settings: NamedDependency[Settings],
    next_path: Annotated[str, Parameter(query="next", max_length=MAX_PARAM)] = "/",
) -> Response:
    client = _oidc(request, settings)
    if not LOCAL_PATH.match(next_path):
        raise field_error(400, "next", "invalid", "must be a path of this site, such as /")
    limiter: RateLimiter = request.app.state.login_limiter
    limiter.check(client_key(request))
    state, nonce, verifier, browser = (secrets.token_urlsafe(n) for n in (24, 24, 48, 24))
    try:
        target = await client.authorize_url(_redirect_uri(request, settings), state, nonce, verifier)
    except SignInError as exc:
        raise field_error(502, "provider", exc.code, str(exc)) from exc
    await request.app.state.sessions.begin_login(
        state,
        PendingLogin(
            nonce=nonce, verifier=verifier, next=next_path, browser=digest(browser), expires=time.time() + LOGIN_SECONDS
        ),
    )
    response = Redirect(target, status_code=302)
    response.set_cookie(_login_cookie(request, browser, LOGIN_SECONDS))
    response.headers["Cache-Control"] = "no-store"
    return response


@get(
    "/auth/callback",
    summary="Where the provider returns the browser: the code is exchanged and the ID token verified",
    tags=["auth"],
    responses=error_responses(400, 401, 404, 502),
)
async def callback(
    request: Request,
    settings: NamedDependency[Settings],
    oauth_state: Annotated[str, Parameter(query="state")] = "",
    code: str = "",
    error: str = "",
    error_description: str = "",
) -> Response:
    client = _oidc(request, settings)
    if error:
        raise field_error(401, "provider", "sign_in_refused", f"{error[:100]}: {error_description[:200]}".rstrip(": "))
    for name, value in (("state", oauth_state), ("code", code)):
        if not value or len(value) > MAX_PARAM:
            raise field_error(400, name, "invalid", "missing or too long")
    browser = request.cookies.get(LOGIN_COOKIE, "")
    pending = (
        await request.app.state.sessions.take_login(oauth_state, browser) if browser and len(browser) < 100 else None
    )
    if pending is None:
        raise field_error(
            400, "state", "unknown_state", "no sign-in of this browser is waiting for this state (used already?)"
        )
    try:
        id_token = await client.exchange(code, pending.verifier, _redirect_uri(request, settings))
        identity = client.identity(await client.verify(id_token, pending.nonce))
    except SignInError as exc:
        status = 502 if exc.code.startswith("provider") else 401
        raise field_error(status, "id_token" if status == 401 else "provider", exc.code, str(exc)) from exc
    value, _record = await request.app.state.sessions.open(identity)
    response = Redirect(pending.next, status_code=303)
    response.set_cookie(_cookie(request, value, SESSION_SECONDS))
    response.set_cookie(_login_cookie(request, "", 0))
    response.headers["Cache-Control"] = "no-store"
    return response


class SignedOut(BaseModel):
    signed_out: bool = Field(description="whether a session was ended")
    provider_logout: str | None = Field(
        description="the provider's own sign-out page, to end the sign-in there too (null: it names none)"
    )


@post(
    "/auth/logout",
    summary="Sign out: the session ends on every replica",
    status_code=200,
    tags=["auth"],
    responses=error_responses(403, 404, 415),
)
async def logout(request: Request, settings: NamedDependency[Settings]) -> Response[SignedOut]:
    client = _oidc(request, settings)
    ended = await request.app.state.sessions.end(request.cookies.get(SESSION_COOKIE, ""))
    response = Response(SignedOut(signed_out=ended, provider_logout=await client.logout_url()))
    response.set_cookie(_cookie(request, "", 0))
    return response


ROUTES = [login, callback, logout]
