"""The HTTP contract's edges, on the Litestar app against its own real NATS server with no workers running:
bad input gets a 4xx naming the field, and POST answers without anything contacting the URL."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import pytest
from litestar.testing import AsyncTestClient

from services.api.main import create_app
from services.runtime.embedded import EmbeddedNats
from services.runtime.settings import Settings

# The API answers IP literals and localhost (plus TUBEFLOW_ALLOWED_HOSTS): not the test client's default host.
LOCAL = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def lonely_nats(tmp_path_factory) -> AsyncIterator[str]:
    server = EmbeddedNats(tmp_path_factory.mktemp("api-nats"))
    yield server.start()
    server.stop()


@pytest.fixture
async def client(lonely_nats, tmp_path) -> AsyncIterator[AsyncTestClient]:
    settings = Settings(nats_url=lonely_nats, data_dir=tmp_path, allow_private_urls=False)
    async with AsyncTestClient(app=create_app(settings), base_url=LOCAL) as test_client:
        yield test_client


def error_fields(response) -> dict[str, str]:
    return {e["field"]: e["code"] for e in response.json()["errors"]}


async def test_a_valid_job_is_accepted_without_contacting_the_url(client):
    response = await client.post("/api/jobs", json={"url": "http://video.example.com/watch?v=1", "mode": "both"})
    assert response.status_code == 202, response.text
    view = response.json()
    assert view["status"] == "queued" and view["mode"] == "both" and view["audio_format"] == "mp3"
    assert view["items"] == [] and view["seq"] >= 1 and view["progress"]["percent"] == 0
    assert response.headers["location"] == f"/api/jobs/{view['id']}"
    fetched = await client.get(response.headers["location"])
    assert fetched.status_code == 200 and fetched.json()["id"] == view["id"]
    listed = (await client.get("/api/jobs")).json()
    assert listed["jobs"][0]["id"] == view["id"] and "items" not in listed["jobs"][0]
    events = (await client.get(f"/api/jobs/{view['id']}/events")).json()
    assert [e["type"] for e in events] == ["requested"]
    assert events[0]["data"]["url"] == "http://video.example.com/watch?v=1"


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({}, "url", "missing"),
        ({"url": "ftp://example.com/a.mp4"}, "url", "invalid_url"),
        ({"url": "not a url"}, "url", "invalid_url"),
        ({"url": "http://"}, "url", "invalid_url"),
        ({"url": "http://example.com:99999/x"}, "url", "invalid_url"),
        ({"url": "http://example.com/" + "a" * 2100}, "url", "too_long"),
        ({"url": "http://example.com/v", "mode": "karaoke"}, "mode", "invalid"),
        ({"url": "http://example.com/v", "audio_format": "aiff"}, "audio_format", "invalid"),
        ({"url": "http://example.com/v", "exec": "rm -rf /"}, "exec", "unknown_field"),
        ({"url": "http://example.com/v", "outtmpl": "/etc/%(id)s"}, "outtmpl", "unknown_field"),
        ({"url": "http://example.com/v", "options": {}}, "options", "unknown_field"),
        ({"url": 5}, "url", "invalid"),
        ({"url": "http://example.com/v", "playlist_items": "1-3;rm"}, "playlist_items", "invalid_playlist_items"),
        ({"url": "http://example.com/v", "postprocessors": []}, "postprocessors", "unknown_field"),
        ({"url": "http://127.0.0.1/v.mp4"}, "url", "forbidden_address"),
        ({"url": "http://[::1]:8000/v.mp4"}, "url", "forbidden_address"),
        ({"url": "http://localhost/v.mp4"}, "url", "forbidden_address"),
        ({"url": "http://169.254.169.254/latest/meta-data"}, "url", "forbidden_address"),
        ({"url": "http://2130706433/v.mp4"}, "url", "forbidden_address"),
    ],
)
async def test_bad_bodies_are_422_naming_the_field(client, body, field, code):
    response = await client.post("/api/jobs", json=body)
    assert response.status_code == 422, response.text
    assert error_fields(response).get(field) == code, response.json()
    assert field in response.json()["detail"]


async def test_malformed_json_is_400_and_a_huge_body_is_413(client):
    response = await client.post("/api/jobs", content=b'{"url": ', headers={"content-type": "application/json"})
    assert response.status_code == 400
    huge = await client.post("/api/jobs", json={"url": "http://example.com/v", "format": "b" * 70_000})
    assert huge.status_code == 413


@pytest.mark.parametrize(
    "path",
    ["/api/jobs/01m80kr9ngrx981wzxbmtbw7d3", "/api/jobs/../../x", "/api/jobs/a.b.c/events", "/api/jobs/zzz/stream"],
)
async def test_unknown_jobs_are_404(client, path):
    assert (await client.get(path)).status_code == 404


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "status=exploded", "limit=100000"])
async def test_bad_list_parameters_are_4xx(client, query):
    response = await client.get(f"/api/jobs?{query}")
    assert 400 <= response.status_code < 500


@pytest.mark.parametrize("path", ["/media/../secret", "/media/%2e%2e/%2e%2e/etc/passwd", "/media//etc/passwd"])
async def test_media_never_serves_outside_its_root(client, path):
    assert (await client.get(path)).status_code == 404


async def test_readyz_follows_the_nats_connection(tmp_path):

    from tests.conftest import free_port

    port = free_port()
    server = EmbeddedNats(tmp_path / "nats", port=port)
    server.start()
    settings = Settings(nats_url=server.url, data_dir=tmp_path, allow_private_urls=False)

    async def wait_status(client, wanted: int) -> int:
        status = None
        for _ in range(100):
            status = (await client.get("/readyz")).status_code
            if status == wanted:
                break
            await asyncio.sleep(0.1)
        return status

    try:
        async with AsyncTestClient(app=create_app(settings), base_url=LOCAL) as client:
            assert (await client.get("/readyz")).status_code == 200
            server.stop()
            assert await wait_status(client, 503) == 503
            assert (await client.get("/healthz")).status_code == 200
            server.start()  # same port, same store: the client reconnects by itself
            assert await wait_status(client, 200) == 200
    finally:
        server.stop()


async def test_with_a_token_the_api_and_media_need_it_and_health_stays_open(lonely_nats, tmp_path):
    settings = Settings(nats_url=lonely_nats, data_dir=tmp_path, api_token="s3cret-token")
    (tmp_path / "media" / "j").mkdir(parents=True)
    (tmp_path / "media" / "j" / "a.mp3").write_bytes(b"abc")
    async with AsyncTestClient(app=create_app(settings), base_url=LOCAL) as client:
        for path in ("/api/jobs", "/media/j/a.mp3", "/api/jobs/01m80kr9ngrx981wzxbmtbw7d3/stream"):
            denied = await client.get(path)
            assert denied.status_code == 401, path
            assert (await client.get(path, headers={"Authorization": "Bearer wrong"})).status_code == 401
        assert (await client.get("/api/jobs", headers={"Authorization": "Bearer s3cret-token"})).status_code == 200
        assert (await client.get("/media/j/a.mp3", headers={"Authorization": "Bearer s3cret-token"})).content == b"abc"
        # No token in URLs but where EventSource needs one: a stream takes ?access_token=, media does not.
        assert (await client.get("/media/j/a.mp3?access_token=s3cret-token")).status_code == 401
        stream = "/api/jobs/01m80kr9ngrx981wzxbmtbw7d3/stream"
        assert (await client.get(f"{stream}?access_token=s3cret-token")).status_code == 404  # past the guard
        assert (await client.post("/api/jobs", json={"url": "http://video.example.com/v"})).status_code == 401
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


async def test_the_page_trades_its_token_for_a_read_only_session_cookie(lonely_nats, tmp_path):
    settings = Settings(nats_url=lonely_nats, data_dir=tmp_path, api_token="s3cret-token")
    (tmp_path / "media" / "j").mkdir(parents=True)
    (tmp_path / "media" / "j" / "a.mp3").write_bytes(b"abc")
    async with AsyncTestClient(app=create_app(settings), base_url=LOCAL) as client:
        assert (await client.post("/api/session")).status_code == 401
        opened = await client.post("/api/session", headers={"Authorization": "Bearer s3cret-token"})
        assert opened.status_code == 200 and opened.json()["expires_at"]
        cookie = opened.headers["set-cookie"].lower()
        assert "tubeflow_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        # The cookie (kept by the client) reads media, lists and streams, and changes nothing.
        assert (await client.get("/media/j/a.mp3")).content == b"abc"
        assert (await client.get("/api/jobs")).status_code == 200
        assert (await client.post("/api/jobs", json={"url": "http://video.example.com/v"})).status_code == 401
        # A forged or expired cookie is nothing.
        value = client.cookies["tubeflow_session"]
        expires, _, mac = value.partition(".")
        # (5,000 digits: int() refuses them, which was a 500, issue 23.)
        for forged in (f"{int(expires) + 3600}.{mac}", f"{expires}.{'0' * len(mac)}", "1.abc", "junk", "9" * 5000):
            client.cookies.set("tubeflow_session", forged)
            assert (await client.get("/media/j/a.mp3")).status_code == 401, forged
        client.cookies.set("tubeflow_session", value)
        closed = await client.delete("/api/session", headers={"Authorization": "Bearer s3cret-token"})
        assert closed.status_code == 200 and "max-age=0" in closed.headers["set-cookie"].lower()
        # Ended for good: a copy of the cookie reads nothing (issue 23: it read for the rest of its 12 hours), in
        # this API process and in another one (the ended id is in NATS).
        client.cookies.set("tubeflow_session", value)
        assert (await client.get("/media/j/a.mp3")).status_code == 401
        async with AsyncTestClient(app=create_app(settings), base_url=LOCAL) as other:
            other.cookies.set("tubeflow_session", value)
            assert (await other.get("/media/j/a.mp3")).status_code == 401
            fresh = await other.post("/api/session", headers={"Authorization": "Bearer s3cret-token"})
            assert fresh.status_code == 200 and (await other.get("/media/j/a.mp3")).content == b"abc"


async def test_job_creation_is_rate_limited_per_client(lonely_nats, tmp_path):
    settings = Settings(nats_url=lonely_nats, data_dir=tmp_path, rate_limit=3)
    async with AsyncTestClient(app=create_app(settings), base_url=LOCAL) as client:
        codes = [
            (await client.post("/api/jobs", json={"url": "http://video.example.com/v"})).status_code for _ in range(4)
        ]
        assert codes == [202, 202, 202, 429]
        limited = await client.post("/api/jobs", json={"url": "http://video.example.com/v"})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert limited.json()["errors"][0]["code"] == "rate_limited"
        assert (await client.get("/api/jobs")).status_code == 200  # reads are not limited


async def test_media_does_not_follow_symlinks_out_of_its_root(lonely_nats, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    media = tmp_path / "data" / "media"
    media.mkdir(parents=True)
    (media / "link.txt").symlink_to(secret)
    (media / "inside.txt").write_text("public")
    settings = Settings(nats_url=lonely_nats, data_dir=tmp_path / "data")
    async with AsyncTestClient(app=create_app(settings), base_url=LOCAL) as client:
        assert (await client.get("/media/link.txt")).status_code == 404
        assert (await client.get("/media/inside.txt")).text == "public"
        assert (await client.get(f"/media/{secret}")).status_code == 404


async def test_a_media_path_too_long_for_the_file_system_is_404_not_500(client):
    response = await client.get("/media/" + "ṱ̺̺o" * 120)
    assert response.status_code == 404
    response = await client.get("/media/" + "a" * 300 + "/" + "b" * 300)
    assert response.status_code == 404


async def test_only_listed_hosts_ip_literals_and_localhost_are_answered(lonely_nats, tmp_path):
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 sends `Host: evil.example`."""
    settings = Settings(nats_url=lonely_nats, data_dir=tmp_path, allowed_hosts="tubeflow.example.org,*.lan.example")
    async with AsyncTestClient(app=create_app(settings), base_url=LOCAL) as client:
        for host in ("evil.example", "tubeflow.example.org.evil.example", "lan.example.evil", "EVIL.example:8000"):
            refused = await client.get("/api/jobs", headers={"Host": host})
            assert refused.status_code == 400 and error_fields(refused) == {"Host": "host_not_allowed"}, host
            assert (await client.get("/", headers={"Host": host})).status_code == 400
        for host in ("127.0.0.1:8000", "[::1]:8000", "localhost:8000", "tubeflow.example.org", "box.lan.example"):
            assert (await client.get("/api/jobs", headers={"Host": host})).status_code == 200, host
    anything = Settings(nats_url=lonely_nats, data_dir=tmp_path, allowed_hosts="*")
    async with AsyncTestClient(app=create_app(anything), base_url=LOCAL) as client:
        assert (await client.get("/api/jobs", headers={"Host": "evil.example"})).status_code == 200


async def test_state_changes_need_json_and_this_site_or_a_listed_origin(lonely_nats, tmp_path):
    """CSRF: a page on another site can POST text/plain or a form without a preflight; tubeflow refuses both, and
    any request whose Origin is foreign. Clients without an Origin (curl, scripts) are not browsers elsewhere."""
    settings = Settings(nats_url=lonely_nats, data_dir=tmp_path, allowed_origins="https://ui.example.org")
    body = '{"url": "http://video.example.com/v"}'
    async with AsyncTestClient(app=create_app(settings), base_url="http://127.0.0.1:8000") as client:
        plain = await client.post("/api/jobs", content=body, headers={"Content-Type": "text/plain"})
        assert plain.status_code == 415 and error_fields(plain) == {"Content-Type": "unsupported_media_type"}
        form = await client.post("/api/jobs", data={"url": "http://video.example.com/v"})
        assert form.status_code == 415
        foreign = await client.post(
            "/api/jobs", json={"url": "http://video.example.com/v"}, headers={"Origin": "https://evil.example"}
        )
        assert foreign.status_code == 403 and error_fields(foreign) == {"Origin": "forbidden_origin"}
        cancel = await client.post(f"/api/jobs/{'0' * 26}/cancel", headers={"Origin": "https://evil.example"})
        assert cancel.status_code == 403
        for origin in (None, "http://127.0.0.1:8000", "https://ui.example.org"):
            headers = {"Origin": origin} if origin else {}
            accepted = await client.post("/api/jobs", json={"url": "http://video.example.com/v"}, headers=headers)
            assert accepted.status_code == 202, (origin, accepted.text)
        # Reads are not state changes.
        assert (await client.get("/api/jobs", headers={"Origin": "https://evil.example"})).status_code == 200


async def test_media_is_never_sniffed_nor_run_and_only_audio_or_video_shows_inline(lonely_nats, tmp_path):
    media = tmp_path / "media" / "j"
    media.mkdir(parents=True)
    (media / "page.html").write_text("<script>alert(1)</script>")
    (media / "image.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>")
    (media / "clip.mp4").write_bytes(b"\x00" * 10)
    async with AsyncTestClient(
        app=create_app(Settings(nats_url=lonely_nats, data_dir=tmp_path)), base_url=LOCAL
    ) as client:
        for name in ("page.html", "image.svg"):
            response = await client.get(f"/media/j/{name}")
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["content-security-policy"] == "sandbox"
            assert response.headers["content-disposition"] == "attachment"
        clip = await client.get("/media/j/clip.mp4")
        assert "content-disposition" not in clip.headers and clip.headers["x-content-type-options"] == "nosniff"


async def test_a_regex_format_and_playlist_ranges_above_the_cap_are_refused(lonely_nats, tmp_path):
    settings = Settings(nats_url=lonely_nats, data_dir=tmp_path, max_playlist_items=100)
    async with AsyncTestClient(app=create_app(settings), base_url=LOCAL) as client:
        regex = await client.post(
            "/api/jobs", json={"url": "http://video.example.com/v", "format": "best[url~='(a+)+c']"}
        )
        assert regex.status_code == 422 and error_fields(regex) == {"format": "invalid_format"}
        for broken in ("best[", "bv+", "(best", "best[height<<4]", "best;rm -rf", "((((((((((best))))))))))"):
            refused = await client.post("/api/jobs", json={"url": "http://video.example.com/v", "format": broken})
            assert refused.status_code == 422 and error_fields(refused) == {"format": "invalid_format"}, broken
            assert "position" in refused.json()["errors"][0]["message"]
        for selector in ("bv*[height<=720]+ba/b", "137+140", "best[format_id!*=dash][tbr>1.5k]", "(bv+ba)/b,w"):
            accepted = await client.post("/api/jobs", json={"url": "http://video.example.com/v", "format": selector})
            assert accepted.status_code == 202, (selector, accepted.text)
        huge = await client.post("/api/jobs", json={"url": "http://video.example.com/l", "playlist_items": "1-999999"})
        assert huge.status_code == 422 and error_fields(huge) == {"playlist_items": "too_large"}
        fine = await client.post("/api/jobs", json={"url": "http://video.example.com/l", "playlist_items": "1-3,100"})
        assert fine.status_code == 202


async def test_metrics_need_the_token_when_one_is_set(lonely_nats, tmp_path):
    settings = Settings(nats_url=lonely_nats, data_dir=tmp_path, api_token="t0ken")
    async with AsyncTestClient(app=create_app(settings), base_url=LOCAL) as client:
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers={"Authorization": "Bearer t0ken"})).status_code == 200


def test_an_empty_token_is_refused_at_start_up():
    import subprocess
    import sys

    from tests.conftest import ROOT

    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "service", "api"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "TUBEFLOW_API_TOKEN": " ", "TUBEFLOW_NATS_URL": "nats://127.0.0.1:1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "TUBEFLOW_API_TOKEN is set but empty" in result.stderr, result.stderr


@pytest.mark.parametrize("interval", ["3000000d", "99999999999999999999999d", 1e300, "367d"])
async def test_a_subscription_interval_past_a_year_is_422_on_create_and_patch(client, interval):
    """Issue 23: PATCH {"interval": "3000000d"} was accepted (a 500 while answering), and its event stopped every
    service that read it."""
    refused = await client.post(
        "/api/subscriptions", json={"url": "http://feeds.example.com/a.xml", "interval": interval}
    )
    assert refused.status_code == 422 and error_fields(refused) == {"interval": "invalid"}, refused.text
    made = await client.post("/api/subscriptions", json={"url": "http://feeds.example.com/b.xml", "interval": "1h"})
    assert made.status_code == 201, made.text
    patched = await client.patch(f"/api/subscriptions/{made.json()['id']}", json={"interval": interval})
    assert patched.status_code == 422 and error_fields(patched) == {"interval": "invalid"}, patched.text
    assert (await client.get(f"/api/subscriptions/{made.json()['id']}")).json()["interval"] == 3600


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/jobs?since=0.5", None),
        ("/api/jobs?since=1700000000", None),
        ("/api/jobs/bulk", {"action": "delete", "ids": ["x"], "files": 0}),
    ],
)
async def test_input_is_as_strict_as_the_document_says(client, path, body):
    """Issue 23: a number as `since` (read as seconds since 1970) and 0 as a boolean were accepted."""
    response = await (client.get(path) if body is None else client.post(path, json=body))
    assert response.status_code in (400, 422), response.text


async def test_since_takes_iso_times_with_or_without_a_zone(client):
    for since in ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00", "2026-01-01"):
        assert (await client.get("/api/jobs", params={"since": since})).status_code == 200, since


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "cancel"}, "ids"),
        ({"action": "cancel", "ids": [], "filter": {}}, "filter"),
        ({"action": "priority", "ids": ["x"]}, "priority"),
    ],
)
async def test_a_bulk_requests_422_names_the_field(client, body, field):
    """Issue 23: the combination's error named `body`."""
    response = await client.post("/api/jobs/bulk", json=body)
    assert response.status_code == 422 and field in error_fields(response), response.text
