"""Signed-in sessions (TUBEFLOW_AUTH=oidc; and the page's personal token traded for a cookie) and the sign-ins under way, in bucket tubeflow_sessions, shared by every
API replica.

A session is a random secret in the page's cookie (``tubeflow_session``, HttpOnly, SameSite=Strict, 12 h); the
bucket keeps only its SHA-256 (``session.<digest>``) with who signed in and until when, and every replica keeps those
in memory from the bucket's own messages: a session ended on one (sign-out) is refused by all within the next
request. A session is rotated (a new secret, the old one ending a minute later) once an hour while it is used.

A sign-in under way (``login.<digest of its state>``) holds the nonce, the PKCE verifier, where to return and the
digest of a secret set in a cookie on the browser that started it; the callback takes it exactly once (a delete
conditioned on its revision), so a replayed or forged state signs no one in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from pydantic import BaseModel, Field

from services.api.identity import Identity, Role, Scope
from services.runtime.nats.kv import BucketMirror
from services.runtime.nats.topology import SESSIONS_BUCKET

SESSION_SECONDS = 12 * 3600
ROTATE_AFTER = 3600
# A rotated session's old secret keeps working this long: requests already on their way still count.
ROTATION_GRACE = 60
LOGIN_SECONDS = 600
MAX_PER_USER = 20
# The cookie's value: this prefix and the secret (the admin's cookie in token mode is `expires.id.mac`).
PREFIX = "o."


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class SessionRecord(BaseModel):
    user: str = Field(max_length=128)
    role: Role
    email: str | None = None
    groups: list[str] = []
    created: float
    expires: float
    rotate_at: float
    # How the session was opened: `oidc` (a sign-in), or the page's token traded for it (`personal_token`,
    # `users_file`: such a session reads only, and one of a personal token ends with the token).
    via: str = "oidc"
    scope: Scope = "write"
    token_id: str | None = None

    def identity(self) -> Identity:
        return Identity(
            self.user, self.role, self.via, self.scope, self.email, tuple(self.groups), token_id=self.token_id
        )


class PendingLogin(BaseModel):
    nonce: str
    verifier: str
    next: str
    browser: str  # SHA-256 of the secret in the browser's tubeflow_login cookie
    expires: float


class SessionBook(BucketMirror):
    bucket = SESSIONS_BUCKET
    keys = "session.*"

    def __init__(self) -> None:
        super().__init__()
        self._known: dict[str, SessionRecord] = {}

    def _put(self, key: str, value: bytes) -> None:
        try:
            self._known[key.removeprefix("session.")] = SessionRecord.model_validate_json(value)
        except ValueError:
            self._gone(key)

    def _gone(self, key: str) -> None:
        self._known.pop(key.removeprefix("session."), None)

    def find(self, cookie: str, now: float | None = None) -> SessionRecord | None:
        if not cookie.startswith(PREFIX) or len(cookie) > 100:
            return None
        record = self._known.get(digest(cookie[len(PREFIX) :]))
        if record is None or record.expires <= (time.time() if now is None else now):
            return None
        return record

    async def open(self, identity: Identity) -> tuple[str, SessionRecord]:
        """A new session for ``identity``: (the cookie's value, its record)."""
        now = time.time()
        record = SessionRecord(
            user=identity.user,
            role=identity.role,
            email=identity.email,
            groups=list(identity.groups),
            via=identity.via,
            scope=identity.scope,
            token_id=identity.token_id,
            created=now,
            expires=now + SESSION_SECONDS,
            rotate_at=now + ROTATE_AFTER,
        )
        secret = secrets.token_urlsafe(32)
        key = digest(secret)
        assert self.kv is not None
        # At most MAX_PER_USER live sessions a person: the oldest end (a script opening sessions in a loop fills
        # neither the bucket nor every replica's memory).
        theirs = sorted((r.created, k) for k, r in self._known.items() if r.user == identity.user and r.expires > now)
        for _, old in theirs[: max(0, len(theirs) - MAX_PER_USER + 1)]:
            await self.kv.delete(f"session.{old}")
            self._known.pop(old, None)
        await self.kv.put(f"session.{key}", record.model_dump_json().encode())
        self._known[key] = record
        return PREFIX + secret, record

    async def rotate(self, cookie: str) -> tuple[str, SessionRecord] | None:
        """A fresh secret for a session due for rotation (the old one ends a minute later); None when not due."""
        record = self.find(cookie)
        now = time.time()
        if record is None or now < record.rotate_at:
            return None
        fresh = record.model_copy(update={"rotate_at": now + ROTATE_AFTER})
        secret = secrets.token_urlsafe(32)
        assert self.kv is not None
        await self.kv.put(f"session.{digest(secret)}", fresh.model_dump_json().encode())
        self._known[digest(secret)] = fresh
        old = record.model_copy(update={"expires": min(record.expires, now + ROTATION_GRACE), "rotate_at": 1e18})
        await self.kv.put(f"session.{digest(cookie[len(PREFIX) :])}", old.model_dump_json().encode())
        return PREFIX + secret, fresh

    async def end(self, cookie: str) -> bool:
        if self.find(cookie) is None:
            return False
        key = digest(cookie[len(PREFIX) :])
        assert self.kv is not None
        await self.kv.delete(f"session.{key}")
        self._known.pop(key, None)
        return True

    async def begin_login(self, state: str, login: PendingLogin) -> None:
        assert self.kv is not None
        await self.kv.create(f"login.{digest(state)}", login.model_dump_json().encode())

    async def take_login(self, state: str, browser_secret: str) -> PendingLogin | None:
        """The sign-in ``state`` began, taken once, when the same browser brings it back in time; else None."""
        assert self.kv is not None
        key = f"login.{digest(state)}"
        try:
            entry = await self.kv.get(key)
        except Exception:  # noqa: BLE001 - not found (or deleted): no such sign-in
            return None
        if entry is None or not entry.value:
            return None
        try:
            login = PendingLogin.model_validate_json(entry.value)
        except ValueError:
            return None
        if not hmac.compare_digest(login.browser, digest(browser_secret)):
            return None  # another browser's state: left for its own browser
        try:
            await self.kv.delete(key, last=entry.revision)
        except Exception:  # noqa: BLE001 - someone took it first
            return None
        return login if login.expires > time.time() else None
