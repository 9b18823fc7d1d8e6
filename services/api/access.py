"""Who may call the API: the optional bearer token, same-site state changes, the hosts it answers to, and per-client
budgets for creating jobs and opening streams."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import math
import re
import secrets
import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable

from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

PROTECTED_PREFIXES = ("/api/", "/media/", "/metrics")
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


# A bearer token longer than this is no token of ours (refused before any comparison).
MAX_TOKEN = 512

SESSION_COOKIE = "tubeflow_session"
SESSION_SECONDS = 12 * 3600
# Read-only requests a session cookie may make: the page's media links and its event streams.
COOKIE_METHODS = frozenset({"GET", "HEAD"})


def session_value(token: str, expires: int, session_id: str | None = None) -> str:
    """A session cookie's value: its expiry, its id and an HMAC of both keyed by the token. Nothing is stored
    server-side but the ids of sessions ended before their expiry (``EndedSessions``)."""
    session_id = session_id or secrets.token_hex(12)
    mac = hmac.new(token.encode(), f"session:{expires}:{session_id}".encode(), hashlib.sha256).hexdigest()
    return f"{expires}.{session_id}.{mac}"


def valid_session(token: str, value: str, now: float | None = None) -> str | None:
    """The session's id when ``value`` is a cookie this token made and it has not expired, else None."""
    expires, _, rest = value.partition(".")
    session_id = rest.partition(".")[0]
    # At most 12 ASCII digits (a stranger's 5,000 digits made int() raise: a 500, issue 23).
    if not (expires.isascii() and expires.isdigit() and len(expires) <= 12) or not _SESSION_ID.fullmatch(session_id):
        return None
    if int(expires) < (time.time() if now is None else now):
        return None
    if not hmac.compare_digest(value.encode(), session_value(token, int(expires), session_id).encode()):
        return None
    return session_id


_SESSION_ID = re.compile(r"[0-9a-f]{24}")
ENDED_PREFIX = "session-ended."


class EndedSessions:
    """Sessions ended before their expiry (`DELETE /api/session`), known to every API replica: a key in the
    idempotency bucket (kept 24 h, longer than a session lives), followed through one core subscription."""

    def __init__(self) -> None:
        self._ended: set[str] = set()
        self._kv: Any = None
        self._sub: Any = None

    async def start(self, nc: Any, kv: Any) -> None:
        from services.runtime.nats import read_bucket, watch_bucket
        from services.runtime.nats.topology import IDEMPOTENCY_BUCKET

        self._kv = kv
        self._sub = await watch_bucket(
            nc, IDEMPOTENCY_BUCKET, on_put=self._heard, on_delete=lambda key: None, keys=ENDED_PREFIX + ">"
        )
        for key in await read_bucket(kv, ENDED_PREFIX + ">"):
            self._heard(key, b"")

    def _heard(self, key: str, _: bytes) -> None:
        self._ended.add(key.removeprefix(ENDED_PREFIX))

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def end(self, session_id: str) -> None:
        self._ended.add(session_id)
        if self._kv is not None:
            await self._kv.put(ENDED_PREFIX + session_id, b"1")

    def ended(self, session_id: str) -> bool:
        return session_id in self._ended


def auth_guard(
    settings: Any, ended: EndedSessions | None = None, tokens: Any = None, sessions: Any = None
) -> Callable[[ASGIConnection, BaseRouteHandler], Awaitable[None]]:
    """/api/*, /media/* and /metrics are answered for an identity (services.api.identity), by TUBEFLOW_AUTH:

    - `none`: the person at this machine (an admin); nothing is asked.
    - `token`: `Authorization: Bearer` TUBEFLOW_API_TOKEN (the admin) or a personal token. No token in URLs, except
      where EventSource needs one: `?access_token=` is taken on event streams only. The page trades its token for a
      session cookie (`POST /api/session`: HttpOnly, SameSite=Strict, 12 h), taken for reads only (GET/HEAD): its
      media links and streams carry no token, and a page elsewhere can't use the cookie to change anything.
    - `forward`: a proxy's Remote-User (and Remote-Email, Remote-Groups for the role), believed only from
      TUBEFLOW_TRUSTED_PROXIES: the same headers from anyone else are refused (401). Personal tokens work too.
    - `oidc`: the session cookie a sign-in with the provider opened (services.api.sessions), for reads and, from a
      browser that says its Origin (checked by ``same_site_guard``), for writes. Personal tokens and
      TUBEFLOW_API_TOKEN (if set) work too.

    A viewer, or a token of scope `read`, changes nothing (403). /healthz, /readyz, the page and the schema stay
    open. The identity is on ``connection.state.identity`` for the routes."""
    from services.api.identity import ADMIN_TOKEN, LOCAL, forwarded, read_users_file
    from services.api.sessions import PREFIX as SESSION_PREFIX

    mode = settings.auth_mode()
    users = read_users_file(settings.users_file) if settings.users_file else None
    token = settings.api_token
    expected = token.encode() if token else None
    trusted = parse_trusted(settings.trusted_proxies)
    names = (settings.forward_user_header, settings.forward_email_header, settings.forward_groups_header)
    admin_groups, viewer_groups = settings.group_list("admin_groups"), settings.group_list("viewer_groups")

    def bearer(given: str) -> Any:
        given = given.strip()
        if not given or len(given) > MAX_TOKEN:
            return None
        if expected is not None and hmac.compare_digest(given.encode(), expected):
            return ADMIN_TOKEN
        if users is not None and (found := users.identify(given)) is not None:
            return found
        return tokens.identify(given) if tokens is not None else None

    def identify(connection: ASGIConnection) -> Any:
        if mode == "none":
            return LOCAL
        if mode == "forward":
            peer = connection.client.host if connection.client else ""
            found = forwarded(connection.headers, peer, trusted, names, admin_groups, viewer_groups)
            if found is not None:
                return found
        header = connection.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and (found := bearer(given)) is not None:
            return found
        if connection.url.path.endswith("/stream"):
            found = bearer(connection.query_params.get("access_token", ""))
            if found is not None:
                return found
        cookie = connection.cookies.get(SESSION_COOKIE, "")
        if cookie.startswith(SESSION_PREFIX) and sessions is not None:
            record = sessions.find(cookie)
            if record is not None:
                if record.token_id is not None and (tokens is None or not tokens.active(record.token_id)):
                    return "the token this session was opened with is revoked"
                if connection.scope.get("method") in COOKIE_METHODS:
                    return record.identity()
                if record.via == "oidc" and connection.headers.get("origin"):
                    return record.identity()
                return "a change made with the session cookie must come from the page (Origin; a token's: its token)"
        if token and cookie and connection.scope.get("method") in COOKIE_METHODS:
            session_id = valid_session(token, cookie)
            if session_id is not None and not (ended is not None and ended.ended(session_id)):
                return ADMIN_TOKEN
        return None

    challenge = {"WWW-Authenticate": 'Bearer realm="tubeflow"'}
    if mode == "oidc":  # where a person signs in: the page shows a button for it
        challenge["Link"] = '</auth/login>; rel="login"'

    # Async on purpose: Litestar runs a sync guard in a worker thread, a thread hop on every request.
    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        if not connection.url.path.startswith(PROTECTED_PREFIXES):
            return
        identity = identify(connection)
        if identity is None or isinstance(identity, str):
            raise NotAuthorizedException(identity or "a valid bearer token is required", headers=challenge)
        if users is not None and identity is not LOCAL and identity is not ADMIN_TOKEN:
            identity = users.apply(identity)
        # Opening or ending one's own read-only page session changes nothing else: a reader may.
        writes = connection.scope.get("method") in STATE_CHANGING and connection.url.path != "/api/session"
        if writes and not identity.may_write:
            raise PermissionDeniedException(
                f"{identity.user} may only read ({'a read-only token' if identity.scope == 'read' else 'a viewer'})"
            )
        connection.state.identity = identity

    return guard


def parse_trusted(text: str | None) -> list:
    return [ipaddress.ip_network(part.strip(), strict=False) for part in (text or "").split(",") if part.strip()]


def identity_of(connection: ASGIConnection) -> Any:
    """The identity the guard found (the local admin where no guard ran: open paths)."""
    from services.api.identity import LOCAL

    return getattr(connection.state, "identity", None) or LOCAL


class RateLimiter:
    """A token bucket per client: ``per_minute`` job creations, refilled continuously; 0 turns it off."""

    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 10_000,
        what: str = "jobs created",
    ):
        self.per_minute = per_minute
        self.what = what
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max_clients = max_clients

    def check(self, client: str) -> None:
        if self.per_minute <= 0:
            return
        now = self._clock()
        rate = self.per_minute / 60.0
        tokens, last = self._buckets.get(client, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - last) * rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            retry_after = math.ceil((1.0 - tokens) / rate)
            raise TooManyRequests(retry_after, self.what)
        self._buckets[client] = (tokens - 1.0, now)
        self._buckets.move_to_end(client)
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)


class TooManyRequests(HTTPException):
    status_code = 429

    def __init__(self, retry_after: int, what: str = "jobs created") -> None:
        super().__init__(
            detail=f"too many {what}; try again in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
            extra={"errors": [{"field": "client", "code": "rate_limited", "message": f"rate of {what} exceeded"}]},
        )


class StreamLimiter:
    """Open SSE streams: at most ``total`` in this process and ``per_client`` from one client address (0: no limit).
    Each stream holds memory and a socket for as long as its client likes."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total, self.per_client = total, per_client
        self.open: dict[str, int] = {}
        self.count = 0

    def acquire(self, client: str) -> None:
        if (self.total and self.count >= self.total) or (
            self.per_client and self.open.get(client, 0) >= self.per_client
        ):
            raise HTTPException(
                status_code=429,
                detail="too many open streams; close some or try again later",
                headers={"Retry-After": "5"},
                extra={"errors": [{"field": "client", "code": "too_many_streams", "message": "stream limit reached"}]},
            )
        self.open[client] = self.open.get(client, 0) + 1
        self.count += 1

    def release(self, client: str) -> None:
        left = self.open.get(client, 0) - 1
        if left > 0:
            self.open[client] = left
        else:
            self.open.pop(client, None)
        self.count = max(0, self.count - 1)


def client_key(connection: ASGIConnection) -> str:
    client: Any = connection.client
    return client.host if client else "unknown"


def same_site_guard(allowed_origins: tuple[str, ...]) -> Callable[[ASGIConnection, BaseRouteHandler], Awaitable[None]]:
    """Requests that change state come from this page or a listed origin, and carry JSON.

    A browser sends ``Origin`` with every cross-site POST; a page elsewhere could otherwise submit or cancel jobs on
    a tubeflow at 127.0.0.1 (a form or a text/plain fetch needs no CORS preflight). Clients that send no Origin
    (curl, scripts, `tubeflow get`) are not browsers on another site. A body must be ``application/json``: the other
    types a page can send without a preflight are refused with 415.
    """
    allowed = {origin.rstrip("/").lower() for origin in allowed_origins}

    async def guard(connection: ASGIConnection, route_handler: BaseRouteHandler) -> None:
        if connection.scope.get("method") not in STATE_CHANGING:
            return
        origin = (connection.headers.get("origin") or "").rstrip("/").lower()
        if origin:
            own = f"{connection.url.scheme}://{connection.headers.get('host', '')}".lower()
            if origin != own and origin not in allowed:
                raise HTTPException(
                    status_code=403,
                    detail=f"Origin: {origin} may not change state here (TUBEFLOW_ALLOWED_ORIGINS)",
                    extra={
                        "errors": [
                            {"field": "Origin", "code": "forbidden_origin", "message": f"{origin} is not allowed"}
                        ]
                    },
                )
        has_body = (
            connection.headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in connection.headers
        )
        kind = connection.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        # A handler may take a file as it is (PUT, which no cross-site form can send): its opt names the types.
        accepted = ("application/json", *route_handler.opt.get("body_types", ()))
        if has_body and kind not in accepted and not (kind == "" and len(accepted) > 1):
            raise HTTPException(
                status_code=415,
                detail="Content-Type: send the body as application/json",
                extra={
                    "errors": [
                        {
                            "field": "Content-Type",
                            "code": "unsupported_media_type",
                            "message": f"{kind or 'none'} is not application/json",
                        }
                    ]
                },
            )

    return guard


def host_guard(allowed_hosts: tuple[str, ...]) -> Callable[[ASGIConnection, BaseRouteHandler], Awaitable[None]]:
    """Against DNS rebinding: a page on evil.example whose name is made to resolve to 127.0.0.1 reaches this API
    with ``Host: evil.example`` and could read it as its own origin. Only hosts named here are answered, besides IP
    literals and ``localhost`` (which no page elsewhere can be served under). ``*`` allows every host; ``*.example.org``
    a domain and its subdomains."""
    exact = {host.lower() for host in allowed_hosts if not host.startswith("*")}
    suffixes = tuple(host[1:].lower() for host in allowed_hosts if host.startswith("*.") and len(host) > 2)
    everything = "*" in allowed_hosts

    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        if everything:
            return
        host = _hostname(connection.headers.get("host", ""))
        if host in exact or host == "localhost" or _is_ip(host) or (suffixes and ("." + host).endswith(suffixes)):
            return
        raise HTTPException(
            status_code=400,
            detail=f"Host: {host[:100]} is not served here (TUBEFLOW_ALLOWED_HOSTS)",
            extra={"errors": [{"field": "Host", "code": "host_not_allowed", "message": f"{host[:100]} is not listed"}]},
        )

    return guard


def _hostname(header: str) -> str:
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8000
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
