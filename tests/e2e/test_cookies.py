"""Cookie profiles (issue 14, item 3): a site that wants a login (403 without its session cookie) downloads with a
stored profile; the profile is listed by domains only; nothing of the file ever shows in an event, an answer or a
log line; bad files and unknown profiles are 422."""

from __future__ import annotations

import os
import stat

import httpx
import pytest

from tests.e2e.test_e2e import submit, wait_finished
from tests.support.media import PRIVATE_COOKIE

pytestmark = pytest.mark.e2e

NAME, VALUE = PRIVATE_COOKIE


def cookies_txt(domain: str = "127.0.0.1") -> str:
    return (
        "# Netscape HTTP Cookie File\n"
        f"{domain}\tFALSE\t/\tFALSE\t4102444800\t{NAME}\t{VALUE}\n"
        f"#HttpOnly_.example.org\tTRUE\t/\tTRUE\t0\tother\tanother-secret-value\n"
    )


def test_a_cookie_profile_opens_a_site_that_wants_a_login_and_never_leaks(stack, media):
    url = f"{media.base}/private/{media.fresh('clip3.mp4')}"
    denied = wait_finished(stack, submit(stack, url=url)["id"])
    assert denied["status"] == "failed" and denied["error"]["code"] == "http_403", denied

    stored = httpx.put(f"{stack.base}/api/cookies/site-login", content=cookies_txt(), timeout=10)
    assert stored.status_code == 200, stored.text
    assert stored.json()["domains"] == ["127.0.0.1", "example.org"] and stored.json()["cookies"] == 2
    path = stack.data_dir / "cookies" / "site-login.txt"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    listed = httpx.get(f"{stack.base}/api/cookies", timeout=10).json()["profiles"]
    assert [p["name"] for p in listed] == ["site-login"]

    job = submit(stack, url=url, cookies="site-login", metadata=False)
    view = wait_finished(stack, job["id"])
    assert view["status"] == "completed", view
    assert view["items"][0]["download"]["size"] == (media.root / "clip3.mp4").stat().st_size

    events = httpx.get(f"{stack.base}/api/jobs/{job['id']}/events", timeout=10).text
    everything = events + httpx.get(f"{stack.base}/api/jobs/{job['id']}", timeout=10).text + stored.text
    everything += httpx.get(f"{stack.base}/api/cookies", timeout=10).text + stack.log.read_text()
    for secret in (VALUE, "another-secret-value"):
        assert secret not in everything, "a cookie value leaked"
    assert '"cookies":"site-login"' in events.replace(" ", "")  # the job names its profile, and only that

    # Deleted: new jobs naming it are refused; a queued one fails with cookies_unknown.
    assert httpx.delete(f"{stack.base}/api/cookies/site-login", timeout=10).status_code == 204
    assert httpx.delete(f"{stack.base}/api/cookies/site-login", timeout=10).status_code == 404
    refused = httpx.post(f"{stack.base}/api/jobs", json={"url": url, "cookies": "site-login"}, timeout=10)
    assert refused.status_code == 422 and refused.json()["errors"][0]["code"] == "unknown_cookies"


@pytest.mark.parametrize(
    "body, problem",
    [
        ("just some text\n", "7 tab-separated fields"),
        ("127.0.0.1\tMAYBE\t/\tFALSE\t0\tname\tvalue\n", "TRUE or FALSE"),
        ("127.0.0.1\tFALSE\t/\tFALSE\tsoon\tname\tvalue\n", "expiry"),
        ("# Netscape HTTP Cookie File\n", "no cookies"),
        ("\x00\x01\x02", "not text"),
    ],
)
def test_a_file_that_is_not_a_netscape_cookies_txt_is_refused_without_quoting_it(stack, body, problem):
    answer = httpx.put(f"{stack.base}/api/cookies/bad", content=body, timeout=10)
    assert answer.status_code == 422, answer.text
    error = answer.json()["errors"][0]
    assert error["code"] == "invalid_cookies" and problem in error["message"], error
    assert "value" not in error["message"] and "name\t" not in answer.text


def test_cookie_profile_limits(stack):
    too_big = cookies_txt() + "#" * (1024 * 1024)
    assert httpx.put(f"{stack.base}/api/cookies/big", content=too_big, timeout=10).status_code == 413
    bad_name = httpx.put(f"{stack.base}/api/cookies/Bad%20Name", content=cookies_txt(), timeout=10)
    assert bad_name.status_code == 422 and bad_name.json()["errors"][0]["field"] == "profile"
