"""A real OpenID Connect provider on loopback for the tests (``oidc-provider-mock``, an Authlib-based provider: discovery,
JWKS, authorization code flow, RS256 ID tokens with nonce), and a browser-less walk through its sign-in."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import oidc_provider_mock
import werkzeug.serving


@contextlib.contextmanager
def oidc_provider(users: dict[str, dict]) -> Iterator[str]:
    """A provider on 127.0.0.1 (its issuer URL is yielded); ``users``: sub -> extra claims (email, groups)."""
    app = oidc_provider_mock.app(
        require_nonce=True,
        user_claims=[oidc_provider_mock.User(sub=sub, claims=claims) for sub, claims in users.items()],
    )
    server = werkzeug.serving.make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def authorize(client: httpx.Client, authorize_url: str, sub: str) -> str:
    """Press "Authorize" as ``sub`` on the provider's form: the redirect back (with code and state)."""
    answer = client.post(authorize_url, data={"sub": sub}, follow_redirects=False)
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


def sign_in(client: httpx.Client, sub: str, next_path: str = "/") -> httpx.Response:
    """The whole sign-in from ``client`` (which keeps its cookies): tubeflow's /auth/login, the provider's form,
    tubeflow's /auth/callback. The callback's answer is returned."""
    start = client.get("/auth/login", params={"next": next_path}, follow_redirects=False)
    assert start.status_code == 302, start.text
    back = authorize(client, start.headers["location"], sub)
    return client.get(back, follow_redirects=False)


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}
