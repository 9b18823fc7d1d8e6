"""Signing in with an OpenID Connect provider (issue 28, TUBEFLOW_AUTH=oidc): the authorization code flow with PKCE.

The provider is found by discovery (``<issuer>/.well-known/openid-configuration``, whose ``issuer`` must be the one
configured). An ID token is taken only when its signature verifies against the provider's JWKS (an asymmetric
algorithm the provider lists; never ``none`` or an HMAC), and its issuer, audience (and ``azp`` when there are
several), expiry, issue time and nonce are the ones expected. Everything read from the provider is bounded in time
and size. The claims become an identity: the user from TUBEFLOW_OIDC_USER_CLAIM (then ``email``, then ``sub``), the
role from the groups claim (TUBEFLOW_ADMIN_GROUPS / TUBEFLOW_VIEWER_GROUPS)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx

from services.api.identity import USER_NAME, Identity, role_of

log = logging.getLogger("tubeflow.api.oidc")

# Asymmetric signatures only: a token "signed" with none, or with an HMAC keyed by something public, is no proof.
ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
MAX_DOCUMENT = 512 * 1024  # discovery, JWKS and token responses
MAX_ID_TOKEN = 16 * 1024
TIMEOUT = 10.0
LEEWAY = 60  # seconds of clock difference between us and the provider
DISCOVERY_SECONDS = 3600.0
# A JWKS is read again for a key id it lacks (the provider rotated its keys), at most this often.
JWKS_RETRY_SECONDS = 60.0


class SignInError(Exception):
    """Why a sign-in is refused: ``code`` for machines, the message for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: base64url (no padding) of SHA-256 of the verifier."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@dataclass
class OidcClient:
    issuer: str
    client_id: str
    client_secret: str | None
    scopes: str
    user_claim: str
    groups_claim: str
    admin_groups: frozenset[str]
    viewer_groups: frozenset[str]
    _discovery: dict[str, Any] | None = None
    _discovered_at: float = 0.0
    _keys: dict[str, Any] = field(default_factory=dict)
    _keys_at: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    def from_settings(cls, settings: Any) -> "OidcClient":
        return cls(
            issuer=settings.oidc_issuer.rstrip("/"),
            client_id=settings.oidc_client_id,
            client_secret=settings.oidc_client_secret,
            scopes=settings.oidc_scopes,
            user_claim=settings.oidc_user_claim,
            groups_claim=settings.oidc_groups_claim,
            admin_groups=settings.group_list("admin_groups"),
            viewer_groups=settings.group_list("viewer_groups"),
        )

    async def _get_json(self, url: str) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as client:
            async with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
                return await _bounded_json(response, url)

    async def discovery(self) -> dict[str, Any]:
        async with self._lock:
            if self._discovery is None or time.monotonic() - self._discovered_at > DISCOVERY_SECONDS:
                url = f"{self.issuer}/.well-known/openid-configuration"
                try:
                    found = await self._get_json(url)
                except (httpx.HTTPError, SignInError) as exc:
                    raise SignInError("provider_unreachable", f"the sign-in provider did not answer: {exc}") from exc
                if found.get("issuer", "").rstrip("/") != self.issuer:
                    raise SignInError(
                        "provider_mismatch", f"{url} names issuer {str(found.get('issuer'))[:200]!r}, not {self.issuer}"
                    )
                for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                    if not isinstance(found.get(name), str):
                        raise SignInError("provider_mismatch", f"{url} lacks {name}")
                self._discovery, self._discovered_at = found, time.monotonic()
            return self._discovery

    async def authorize_url(self, redirect_uri: str, state: str, nonce: str, verifier: str) -> str:
        found = await self.discovery()
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "scope": self.scopes,
                "state": state,
                "nonce": nonce,
                "code_challenge": pkce_challenge(verifier),
                "code_challenge_method": "S256",
            }
        )
        endpoint = found["authorization_endpoint"]
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    async def logout_url(self) -> str | None:
        try:
            found = await self.discovery()
        except SignInError:
            return None
        endpoint = found.get("end_session_endpoint")
        if not isinstance(endpoint, str):
            return None
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode({'client_id': self.client_id})}"

    async def exchange(self, code: str, verifier: str, redirect_uri: str) -> str:
        """The ID token the provider gives for ``code`` (with the PKCE verifier)."""
        found = await self.discovery()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        auth = None
        if self.client_secret:
            auth = httpx.BasicAuth(self.client_id, self.client_secret)
        else:
            form["client_id"] = self.client_id
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as client:
                async with client.stream("POST", found["token_endpoint"], data=form, auth=auth) as response:
                    answer = await _bounded_json(response, "the token endpoint", accept_error=True)
                    status = response.status_code
        except httpx.HTTPError as exc:
            raise SignInError("provider_unreachable", f"the token endpoint did not answer: {exc}") from exc
        if status != 200:
            reason = str(answer.get("error_description") or answer.get("error") or status)[:200]
            raise SignInError("code_refused", f"the provider refused the code: {reason}")
        id_token = answer.get("id_token")
        if not isinstance(id_token, str):
            raise SignInError("no_id_token", "the provider answered without an ID token (is openid among the scopes?)")
        return id_token

    async def _key(self, kid: str | None) -> Any:
        async with self._lock:
            if (kid not in self._keys or not self._keys) and time.monotonic() - self._keys_at > JWKS_RETRY_SECONDS:
                self._keys_at = time.monotonic()
                found = self._discovery or {}
                try:
                    document = await self._get_json(found["jwks_uri"])
                except (httpx.HTTPError, KeyError) as exc:
                    raise SignInError("provider_unreachable", f"the provider's keys could not be read: {exc}") from exc
                import jwt  # PyJWT and cryptography (~12 MiB) only in a process that signs people in

                keys: dict[str, Any] = {}
                for entry in document.get("keys", [])[:100]:
                    if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                        continue
                    try:
                        keys[entry.get("kid")] = jwt.PyJWK(entry)
                    except (jwt.PyJWTError, ValueError, TypeError) as exc:
                        log.debug("a JWKS key skipped: %s", exc)
                self._keys = keys
            key = self._keys.get(kid)
            if key is None and kid is None and len(self._keys) == 1:
                key = next(iter(self._keys.values()))
            if key is None:
                raise SignInError(
                    "token_invalid", f"the ID token is signed with a key the provider does not list ({kid})"
                )
            return key

    async def verify(self, id_token: str, nonce: str, now: float | None = None) -> dict[str, Any]:
        """The claims of an ID token that passes every check (SignInError otherwise)."""
        if len(id_token) > MAX_ID_TOKEN:
            raise SignInError("token_invalid", "the ID token is too long")
        import jwt

        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError as exc:
            raise SignInError("token_invalid", f"the ID token is malformed: {exc}") from exc
        algorithm = header.get("alg")
        offered = set((await self.discovery()).get("id_token_signing_alg_values_supported") or ["RS256"])
        if algorithm not in ALGORITHMS or algorithm not in offered:
            raise SignInError("token_invalid", f"the ID token's algorithm {str(algorithm)[:20]} is not accepted")
        key = await self._key(header.get("kid"))
        try:
            claims = jwt.decode(
                id_token,
                key.key,
                algorithms=[algorithm],
                audience=self.client_id,
                issuer=self.issuer,
                leeway=LEEWAY,
                options={"require": ["exp", "iat", "iss", "aud", "sub"], "verify_iat": True},
            )
        except jwt.ExpiredSignatureError as exc:
            raise SignInError("token_expired", "the ID token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise SignInError("token_invalid", "the ID token is for another client (audience)") from exc
        except jwt.InvalidIssuerError as exc:
            raise SignInError("token_invalid", "the ID token is from another issuer") from exc
        except jwt.PyJWTError as exc:
            raise SignInError("token_invalid", f"the ID token does not verify: {exc}") from exc
        if now is not None and int(claims["exp"]) + LEEWAY < now:
            raise SignInError("token_expired", "the ID token has expired")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.client_id:
            raise SignInError("token_invalid", "the ID token names several audiences and another authorized party")
        if not isinstance(claims.get("nonce"), str) or claims["nonce"] != nonce:
            raise SignInError("nonce_mismatch", "the ID token's nonce is not this sign-in's (a replayed token?)")
        return claims

    def identity(self, claims: dict[str, Any]) -> Identity:
        for name in (self.user_claim, "email", "sub"):
            value = claims.get(name)
            if isinstance(value, str) and USER_NAME.match(value):
                user = value
                break
        else:
            raise SignInError("no_user", f"the ID token names no usable user ({self.user_claim}, email or sub)")
        raw = claims.get(self.groups_claim) or []
        if isinstance(raw, str):
            raw = raw.split(",")
        groups = {str(g).strip()[:128] for g in raw[:200] if str(g).strip()} if isinstance(raw, list) else set()
        email = claims.get("email") if isinstance(claims.get("email"), str) else None
        return Identity(
            user,
            role_of(groups, self.admin_groups, self.viewer_groups),
            "oidc",
            email=(email or None) and email[:254],
            groups=tuple(sorted(groups))[:50],
        )


async def _bounded_json(response: httpx.Response, what: str, accept_error: bool = False) -> dict[str, Any]:
    if response.status_code != 200 and not accept_error:
        raise SignInError("provider_error", f"{what} answered {response.status_code}")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_DOCUMENT:
            raise SignInError("provider_error", f"{what} sent more than {MAX_DOCUMENT} bytes")
    try:
        found = json.loads(body)
    except ValueError as exc:
        raise SignInError("provider_error", f"{what} did not answer JSON") from exc
    if not isinstance(found, dict):
        raise SignInError("provider_error", f"{what} did not answer a JSON object")
    return found
