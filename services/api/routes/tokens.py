"""Who am I, and personal API tokens (issue 28): made by their owner (an admin may make one for someone else), shown
once, kept as a hash, listed and revoked by their owner (admins: anyone's)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from pydantic import BaseModel, ConfigDict, Field

from services.api.access import identity_of
from services.api.errors import error_responses, field_error
from services.api.identity import MAX_TOKENS_PER_USER, USER_NAME, Role, Scope, TokenBook, describe

MAX_DAYS = 3650


class Me(BaseModel):
    user: str
    role: Role
    via: str = Field(description="none, token, personal_token, users_file, forward or oidc")
    scope: Scope
    email: str | None = None
    groups: list[str] = []


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f]+$")
    scope: Scope = "write"
    expires_in_days: int | None = Field(default=90, ge=1, le=MAX_DAYS, description="null: never expires")
    user: str | None = Field(default=None, max_length=128, description="admins only: whose token it is")
    role: Role | None = Field(default=None, description="admins only: the role it carries (default user)")


class TokenInfo(BaseModel):
    id: str
    name: str
    user: str
    role: Role
    scope: Scope
    created_at: datetime
    expires_at: datetime | None


class CreatedToken(TokenInfo):
    token: str = Field(description="shown this once: only its hash is kept")


class TokenList(BaseModel):
    tokens: list[TokenInfo]


@get("/api/me", summary="Who the API takes this request for: user, role, how they signed in", tags=["auth"])
async def me(request: Request) -> Me:
    return Me(**describe(identity_of(request)))


class TokensController(Controller):
    path = "/api/tokens"
    tags = ["auth"]

    @post(
        "/", status_code=201, summary="Make a personal API token (shown once)", responses=error_responses(401, 403, 422)
    )
    async def create(self, request: Request, tokens: NamedDependency[TokenBook], data: NewToken) -> CreatedToken:
        who = identity_of(request)
        user, role = who.user, ("user" if who.role == "admin" else who.role)
        if data.user is not None or data.role is not None:
            if who.role != "admin":
                raise field_error(403, "user", "forbidden", "only an admin makes tokens for others or with a role")
            user, role = data.user or who.user, data.role or "user"
        if not USER_NAME.match(user):
            raise field_error(422, "user", "invalid", "not a user name")
        if who.scope == "read" and data.scope == "write":
            raise field_error(403, "scope", "forbidden", "a read-only token makes read-only tokens")
        if len(tokens.of(user)) >= MAX_TOKENS_PER_USER:
            raise field_error(422, "name", "too_many", f"at most {MAX_TOKENS_PER_USER} tokens per user: revoke some")
        expires = datetime.now(timezone.utc) + timedelta(days=data.expires_in_days) if data.expires_in_days else None
        record, shown = await tokens.create(user, role, data.name, data.scope, expires)
        return CreatedToken(**record.public(), token=shown)

    @get("/", summary="Your personal tokens (an admin's: everyone's)")
    async def list_tokens(self, request: Request, tokens: NamedDependency[TokenBook]) -> TokenList:
        who = identity_of(request)
        records: list[Any] = tokens.all() if who.role == "admin" else tokens.of(who.user)
        return TokenList(tokens=[TokenInfo(**r.public()) for r in records])

    @delete("/{token_id:str}", status_code=204, summary="Revoke a token: it works nowhere from now on",
            responses=error_responses(401, 404))  # fmt: skip
    async def revoke(self, request: Request, tokens: NamedDependency[TokenBook], token_id: str) -> None:
        who = identity_of(request)
        record = tokens.get(token_id)
        # Someone else's token is as absent as one that never was (no existence leak).
        if record is None or (record.user != who.user and who.role != "admin"):
            raise field_error(404, "token_id", "not_found", "no such token")
        await tokens.revoke(token_id)


ROUTES = [me, TokensController]
