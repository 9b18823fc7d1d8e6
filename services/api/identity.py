"""Who is asking (issue 28): the identity every request to /api/*, /media/* and /metrics is answered for, from the
auth mode (TUBEFLOW_AUTH) — no one in particular on loopback (`none`), the admin's token or a personal token
(`token`), a proxy's Remote-User (`forward`, believed only from TUBEFLOW_TRUSTED_PROXIES) — with a role: `admin`
(everything), `user` (their own work), `viewer` (reads only). A personal token's scope `read` reads only too.

Personal tokens (`tf_<id>.<secret>`) are shown once; only the SHA-256 of the secret is kept (bucket tubeflow_tokens),
with the owner, name, scope and expiry. Every API replica keeps the bucket in memory from its own messages, so a
token revoked on one works nowhere within the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.runtime.nats.kv import BucketMirror
from services.runtime.nats.topology import TOKENS_BUCKET

log = logging.getLogger("tubeflow.api.identity")

Role = Literal["admin", "user", "viewer"]
Scope = Literal["read", "write"]
# A user name or e-mail as a proxy may send it: bounded, printable, no separators that could smuggle a second value.
USER_NAME = re.compile(r"^[\w.@+-]{1,128}$")
MAX_GROUPS_HEADER = 4096
MAX_TOKENS_PER_USER = 50
TOKEN = re.compile(r"^tf_([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class Identity:
    user: str
    role: Role
    via: str
    scope: Scope = "write"
    email: str | None = None
    groups: tuple[str, ...] = ()
    # A personal token's id: a session opened with it ends when the token is revoked.
    token_id: str | None = None

    @property
    def may_write(self) -> bool:
        return self.role != "viewer" and self.scope == "write"


# `none`: the person at this machine, who may do everything.
LOCAL = Identity("local", "admin", "none")
# `token`: TUBEFLOW_API_TOKEN, which stays an admin's.
ADMIN_TOKEN = Identity("admin", "admin", "token")


class TokenRecord(BaseModel):
    id: str
    name: str = Field(max_length=100)
    user: str
    role: Role = "user"
    scope: Scope = "write"
    created_at: datetime
    expires_at: datetime | None = None
    # SHA-256 of the secret, hex: the token is not recoverable from it.
    digest: str

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"digest"})


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token() -> tuple[str, str, str]:
    """(token id, secret, the token as shown once)."""
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    return token_id, secret, f"tf_{token_id}.{secret}"


class TokenBook(BucketMirror):
    """The personal tokens, as this replica knows them (kept in step with the bucket)."""

    bucket = TOKENS_BUCKET

    def __init__(self) -> None:
        super().__init__()
        self._known: dict[str, TokenRecord] = {}

    def _put(self, key: str, value: bytes) -> None:
        try:
            self._known[key] = TokenRecord.model_validate_json(value)
        except ValueError:
            self._known.pop(key, None)

    def _gone(self, key: str) -> None:
        self._known.pop(key, None)

    def identify(self, token: str, now: datetime | None = None) -> Identity | None:
        found = TOKEN.match(token)
        if found is None:
            return None
        record = self._known.get(found.group(1))
        if record is None or not hmac.compare_digest(record.digest, _digest(found.group(2))):
            return None
        if not self.active(record.id, now):
            return None
        return Identity(record.user, record.role, "personal_token", record.scope, token_id=record.id)

    def active(self, token_id: str, now: datetime | None = None) -> bool:
        """Whether the token exists and has not expired (a session opened with it lives as long)."""
        record = self._known.get(token_id)
        return record is not None and (
            record.expires_at is None or record.expires_at > (now or datetime.now(timezone.utc))
        )

    def all(self) -> list[TokenRecord]:
        return sorted(self._known.values(), key=lambda r: r.created_at)

    def of(self, user: str) -> list[TokenRecord]:
        return sorted((r for r in self._known.values() if r.user == user), key=lambda r: r.created_at)

    def get(self, token_id: str) -> TokenRecord | None:
        return self._known.get(token_id)

    async def create(
        self, user: str, role: Role, name: str, scope: Scope, expires_at: datetime | None
    ) -> tuple[TokenRecord, str]:
        token_id, secret, shown = new_token()
        record = TokenRecord(
            id=token_id,
            name=name,
            user=user,
            role=role,
            scope=scope,
            created_at=datetime.now(timezone.utc),
            expires_at=expires_at,
            digest=_digest(secret),
        )
        await self.kv.create(token_id, record.model_dump_json().encode())
        self._known[token_id] = record
        return record, shown

    async def revoke(self, token_id: str) -> None:
        await self.kv.delete(token_id)
        self._known.pop(token_id, None)


class UserEntry(BaseModel):
    """One person in TUBEFLOW_USERS_FILE: their role, and (token mode) the SHA-256 of their token."""

    model_config = ConfigDict(extra="forbid")

    role: Role = "user"
    token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class UsersFile:
    """TUBEFLOW_USERS_FILE: people's roles by name (over their groups, in every mode) and, for token mode, their
    tokens, kept as SHA-256 only (`printf %s "$TOKEN" | sha256sum`)."""

    roles: dict[str, Role]
    by_digest: dict[str, str]

    def identify(self, token: str) -> Identity | None:
        user = self.by_digest.get(_digest(token))
        return Identity(user, self.roles[user], "users_file") if user is not None else None

    def apply(self, identity: Identity) -> Identity:
        """``identity`` with the role the file gives its user, if it names them."""
        role = self.roles.get(identity.user)
        return identity if role is None or role == identity.role else replace(identity, role=role)


def read_users_file(path: Any) -> UsersFile:
    """The file, checked whole: a problem stops the API naming the setting, the user and what is wrong."""
    from services.runtime.jsonfile import SettingsFileError, read_json_object

    loaded = read_json_object(path, "TUBEFLOW_USERS_FILE", "user name -> {role, token_sha256}")
    roles: dict[str, Role] = {}
    by_digest: dict[str, str] = {}
    for user, body in loaded.items():
        if not USER_NAME.match(user):
            raise SettingsFileError(f"TUBEFLOW_USERS_FILE {path}: {user[:100]!r} is not a user name")
        try:
            entry = UserEntry.model_validate(body)
        except ValueError as exc:
            problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())  # type: ignore[attr-defined]
            raise SettingsFileError(f"TUBEFLOW_USERS_FILE {path}: {user}: {problem}") from None
        if entry.token_sha256 is not None:
            if entry.token_sha256 in by_digest:
                raise SettingsFileError(
                    f"TUBEFLOW_USERS_FILE {path}: {user} has {by_digest[entry.token_sha256]}'s token"
                )
            by_digest[entry.token_sha256] = user
        roles[user] = entry.role
    return UsersFile(roles, by_digest)


def role_of(groups: set[str], admin_groups: frozenset[str], viewer_groups: frozenset[str]) -> Role:
    if groups & admin_groups:
        return "admin"
    if groups & viewer_groups:
        return "viewer"
    return "user"


def forwarded(
    headers: Any, peer: str, trusted: list, names: tuple[str, str, str], admin: frozenset[str], viewer: frozenset[str]
) -> Identity | None | str:
    """A proxy's user (Authelia / Authentik / oauth2-proxy headers): an Identity from a trusted proxy, None when the
    request carries no user, or why it is refused (a user header from anyone else, or one that is malformed)."""
    user_header, email_header, groups_header = names
    user = headers.get(user_header)
    if user is None:
        return None
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return "the user header came from an unknown address"
    if not any(address in network for network in trusted):
        return f"{user_header} is believed only from TUBEFLOW_TRUSTED_PROXIES"
    user = user.strip()
    if not USER_NAME.match(user):
        return f"{user_header} is not a user name"
    email = (headers.get(email_header) or "").strip()[:254] or None
    raw_groups = headers.get(groups_header) or ""
    if len(raw_groups) > MAX_GROUPS_HEADER:
        return f"{groups_header} is too long"
    groups = {g.strip() for g in raw_groups.split(",") if g.strip()}
    return Identity(user, role_of(groups, admin, viewer), "forward", email=email, groups=tuple(sorted(groups))[:50])


def describe(identity: Identity) -> dict[str, Any]:
    return {
        "user": identity.user,
        "role": identity.role,
        "via": identity.via,
        "scope": identity.scope,
        "email": identity.email,
        "groups": list(identity.groups),
    }
