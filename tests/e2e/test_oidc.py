"""Signing in with OpenID Connect (issue 28, TUBEFLOW_AUTH=oidc) against a real provider on loopback: the code flow
with PKCE and a nonce, a session cookie per person (each sees only their own jobs), sign-out everywhere, and the
refusals — a replayed or foreign state, a tampered ID token, another client's (audience), an expired one, a replayed
nonce."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import httpx
import pytest

from bench.harness import nats_server, tubeflow
from services.api.oidc import LEEWAY, OidcClient, SignInError, pkce_challenge
from tests.support.oidc import authorize, oidc_provider, query_of, sign_in

pytestmark = pytest.mark.e2e

USERS = {
    "alice@example.com": {"email": "alice@example.com", "groups": ["family"]},
    "bob@example.com": {"email": "bob@example.com", "groups": ["family"]},
    "root@example.com": {"email": "root@example.com", "groups": ["admins"]},
    "grandpa@example.com": {"email": "grandpa@example.com", "groups": ["guests"]},
}


@pytest.fixture(scope="module")
def provider():
    with oidc_provider(USERS) as issuer:
        yield issuer


def _env(issuer: str, client_id: str = "tubeflow") -> dict[str, str]:
    return {
        "TUBEFLOW_AUTH": "oidc",
        "TUBEFLOW_OIDC_ISSUER": issuer,
        "TUBEFLOW_OIDC_CLIENT_ID": client_id,
        "TUBEFLOW_OIDC_CLIENT_SECRET": "s3cret",
        "TUBEFLOW_OIDC_SCOPES": "openid email profile",
        "TUBEFLOW_VIEWER_GROUPS": "guests",
    }


def test_sign_in_each_person_sees_their_own_jobs_and_sign_out_ends_the_session(provider, media):
    with nats_server() as server, tubeflow(server.url, ["api", "progress", "downloader"], _env(provider)) as stack:
        origin = {"Origin": stack.base}
        alice = httpx.Client(base_url=stack.base, timeout=30)
        bob = httpx.Client(base_url=stack.base, timeout=30)
        nobody = httpx.Client(base_url=stack.base, timeout=30)
        # Not signed in: 401 with no session; the login sends the browser to the provider with PKCE (S256) and a nonce.
        assert nobody.get("/api/jobs").status_code == 401
        start = nobody.get("/auth/login", params={"next": "/?from=test"}, follow_redirects=False)
        assert start.status_code == 302 and start.headers["location"].startswith(provider)
        asked = query_of(start.headers["location"])
        assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43
        assert asked["nonce"] and asked["state"] and asked["client_id"] == "tubeflow"
        assert asked["redirect_uri"] == f"{stack.base}/auth/callback"
        assert "tubeflow_login" in start.headers["set-cookie"] and "HttpOnly" in start.headers["set-cookie"]

        # Signed in: back where it started, with an HttpOnly, SameSite=Strict session cookie.
        back = sign_in(alice, "alice@example.com", "/?from=test")
        assert back.status_code == 303 and back.headers["location"] == "/?from=test", back.text
        cookie = next(c for c in back.headers.get_list("set-cookie") if c.startswith("tubeflow_session="))
        assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
        me = alice.get("/api/me").json()
        assert me["user"] == "alice@example.com" and me["via"] == "oidc" and me["role"] == "user", me
        assert sign_in(bob, "bob@example.com").status_code == 303

        # Each makes a job with the cookie (the page sends its Origin); each sees only their own.
        url_a, url_b = media.url(media.fresh("clip1.mp4")), media.url(media.fresh("clip2.mp4"))
        mine = alice.post("/api/jobs", json={"url": url_a}, headers=origin)
        assert mine.status_code == 202 and mine.json()["owner"] == "alice@example.com", mine.text
        theirs = bob.post("/api/jobs", json={"url": url_b}, headers=origin).json()
        assert [j["id"] for j in alice.get("/api/jobs").json()["jobs"]] == [mine.json()["id"]]
        assert alice.get(f"/api/jobs/{theirs['id']}").status_code == 404
        # A change with the cookie but without an Origin (not from a page): not taken; from another page: refused.
        assert alice.post("/api/jobs", json={"url": url_a}).status_code == 401
        assert (
            alice.post("/api/jobs", json={"url": url_a}, headers={"Origin": "http://evil.example"}).status_code == 403
        )

        # Roles from the groups claim: an admin sees everyone's; a viewer writes nothing.
        root = httpx.Client(base_url=stack.base, timeout=30)
        sign_in(root, "root@example.com")
        assert root.get("/api/me").json()["role"] == "admin"
        assert {j["id"] for j in root.get("/api/jobs").json()["jobs"]} == {mine.json()["id"], theirs["id"]}
        viewer = httpx.Client(base_url=stack.base, timeout=30)
        sign_in(viewer, "grandpa@example.com")
        assert viewer.post("/api/jobs", json={"url": url_a}, headers=origin).status_code == 403

        # Sign-out: the session is over (a copy of the cookie reads nothing any more).
        copied = alice.cookies.get("tubeflow_session")
        out = alice.post("/auth/logout", headers=origin)
        assert out.status_code == 200 and out.json()["signed_out"] is True
        assert out.json()["provider_logout"].startswith(provider)
        assert nobody.get("/api/me", cookies={"tubeflow_session": copied}).status_code == 401

        # A state used once is used up; a state from another browser (no login cookie) signs no one in.
        replay = httpx.Client(base_url=stack.base, timeout=30)
        start = replay.get("/auth/login", follow_redirects=False)
        callback = authorize(replay, start.headers["location"], "alice@example.com")
        stranger = httpx.Client(base_url=stack.base, timeout=30)
        foreign = stranger.get(callback, follow_redirects=False)
        assert foreign.status_code == 400 and "unknown_state" in foreign.text
        assert replay.get(callback, follow_redirects=False).status_code == 303
        again = replay.get(callback, follow_redirects=False)
        assert again.status_code == 400 and "unknown_state" in again.text
        # Bad input: named, never a 500.
        for params in ({"next": "//evil.example/"}, {"next": "https://evil.example/"}):
            assert nobody.get("/auth/login", params=params, follow_redirects=False).status_code == 400
        for params in ({}, {"state": "x" * 5000, "code": "c"}, {"state": "nope", "code": "c"}):
            assert nobody.get("/auth/callback", params=params).status_code == 400, params
        assert nobody.get("/api/me", cookies={"tubeflow_session": "o." + "x" * 5000}).status_code == 401
        for client in (alice, bob, nobody, root, viewer, replay, stranger):
            client.close()


def _id_token(provider: str, client_id: str, nonce: str) -> str:
    """An ID token the provider issues to ``client_id`` through its own code flow (as the user alice)."""
    verifier = "v" * 50
    with httpx.Client(timeout=30) as client:
        config = client.get(f"{provider}/.well-known/openid-configuration").json()
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": "http://127.0.0.1:9/cb",
            "scope": "openid email",
            "state": "s",
            "nonce": nonce,
            "code_challenge": pkce_challenge(verifier),
            "code_challenge_method": "S256",
        }
        back = authorize(client, str(httpx.URL(config["authorization_endpoint"], params=params)), "alice@example.com")
        code = query_of(back)["code"]
        answer = client.post(
            config["token_endpoint"],
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": params["redirect_uri"],
                  "code_verifier": verifier},
            auth=("tubeflow" if client_id == "tubeflow" else client_id, "s3cret"),
        )  # fmt: skip
        return answer.json()["id_token"]


def _client(provider: str, client_id: str = "tubeflow") -> OidcClient:
    return OidcClient(
        issuer=provider,
        client_id=client_id,
        client_secret="s3cret",
        scopes="openid email",
        user_claim="preferred_username",
        groups_claim="groups",
        admin_groups=frozenset({"admins"}),
        viewer_groups=frozenset(),
    )


def _tamper(token: str, **changes) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def test_id_tokens_that_are_tampered_for_another_client_expired_or_replayed_are_refused(provider):
    async def check() -> None:
        ours = _client(provider)
        good = _id_token(provider, "tubeflow", "n-1")
        claims = await ours.verify(good, "n-1")
        assert claims["sub"] == "alice@example.com" and ours.identity(claims).user == "alice@example.com"

        async def refused(token: str, nonce: str, code: str, says: str = "", now: float | None = None):
            with pytest.raises(SignInError) as caught:
                await ours.verify(token, nonce, now=now)
            assert caught.value.code == code and says in str(caught.value), (code, says, caught.value)

        # A claim changed after signing (another user): the signature no longer verifies.
        await refused(_tamper(good, sub="root@example.com", groups=["admins"]), "n-1", "token_invalid", "Signature")
        # A token issued to another client, presented here: wrong audience.
        await refused(_id_token(provider, "someone-else", "n-2"), "n-2", "token_invalid", "audience")
        # Too old: refused once past its expiry (and the leeway).
        exp = json.loads(base64.urlsafe_b64decode(good.split(".")[1] + "==="))["exp"]
        await refused(good, "n-1", "token_expired", now=exp + LEEWAY + 1)
        # A token from an earlier sign-in replayed into another (its nonce is not this one's).
        await refused(good, "n-other", "nonce_mismatch")
        # Unsigned ("alg": "none") and garbage: refused.
        header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
        await refused(f"{header}.{good.split('.')[1]}.", "n-1", "token_invalid", "algorithm")
        await refused("not.a.token", "n-1", "token_invalid")
        await refused("x" * 20000, "n-1", "token_invalid")

    asyncio.run(check())


def test_a_session_an_hour_old_is_rotated_and_the_old_cookie_ends_a_minute_later(provider):
    import nats

    from services.api.sessions import ROTATION_GRACE, SessionRecord, digest
    from services.runtime.nats.topology import SESSIONS_BUCKET

    async def age(url: str, cookie: str, **changes) -> SessionRecord:
        """The session's record, with ``changes`` written to the bucket (as if time had passed)."""
        nc = await nats.connect(url)
        try:
            kv = await nc.jetstream().key_value(SESSIONS_BUCKET)
            key = f"session.{digest(cookie.removeprefix('o.'))}"
            record = SessionRecord.model_validate_json((await kv.get(key)).value)
            if changes:
                record = record.model_copy(update=changes)
                await kv.put(key, record.model_dump_json().encode())
            return record
        finally:
            await nc.close()

    with nats_server() as server, tubeflow(server.url, ["api"], _env(provider)) as stack:
        with httpx.Client(base_url=stack.base, timeout=30) as alice:
            sign_in(alice, "alice@example.com")
            old = alice.cookies.get("tubeflow_session")
            # Not due yet: the same cookie stays.
            kept = alice.post("/api/session", headers={"Origin": stack.base})
            assert kept.status_code == 200 and "set-cookie" not in kept.headers
            asyncio.run(age(server.url, old, rotate_at=time.time() - 1))
            time.sleep(0.3)  # the API hears the bucket's message
            renewed = alice.post("/api/session", headers={"Origin": stack.base})
            assert renewed.status_code == 200 and renewed.json()["expires_at"], renewed.text
            new = alice.cookies.get("tubeflow_session")
            assert new != old and new.startswith("o.")
            assert alice.get("/api/me").json()["user"] == "alice@example.com"
            # The old secret still reads for a minute (requests already on their way), then never again.
            left = asyncio.run(age(server.url, old)).expires - time.time()
            assert 0 < left <= ROTATION_GRACE + 1, left
            with httpx.Client(base_url=stack.base, timeout=30, cookies={"tubeflow_session": old}) as copy:
                assert copy.get("/api/me").status_code == 200
                asyncio.run(age(server.url, old, expires=time.time() - 1))
                time.sleep(0.3)
                assert copy.get("/api/me").status_code == 401


def test_the_doctor_says_whether_the_provider_answers(provider, tmp_path):
    import os
    import subprocess
    import sys

    def doctor(issuer: str) -> subprocess.CompletedProcess:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("TUBEFLOW_")}
        env = {**clean, "TUBEFLOW_DATA_DIR": str(tmp_path), "TUBEFLOW_AUTH": "oidc", "TUBEFLOW_OIDC_ISSUER": issuer,
               "TUBEFLOW_OIDC_CLIENT_ID": "tubeflow"}  # fmt: skip
        return subprocess.run(
            [sys.executable, "-m", "services.cli", "doctor"], env=env, capture_output=True, text=True, timeout=120
        )

    answering = doctor(provider)
    assert f"auth: oidc ({provider}, discovery answers)" in answering.stdout, answering.stdout
    down = doctor("http://127.0.0.1:9")
    assert down.returncode == 1 and "nobody can sign in" in down.stdout + down.stderr, down.stdout
