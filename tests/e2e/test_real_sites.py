"""Real-site support through the whole stack (issue 24): what the downloaders' engines can do in GET /api/info and
on the page, the `impersonate` option checked at the API and used by downloads (split streams, `tubeflow get`),
and a `tubeflow up` missing a JS runtime and its PO-token provider saying so in one line, in /api/info and in
/readyz, while downloads of other sites go on."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.conftest import start_stack, stop_stack
from tests.e2e.test_e2e import submit, wait_finished
from tests.e2e.test_get import tubeflow_get

pytestmark = pytest.mark.e2e


def engine_info(base: str, timeout: float = 60) -> dict:
    """GET /api/info once a downloader has published its engine's facts."""
    deadline = time.monotonic() + timeout
    while True:
        info = httpx.get(f"{base}/api/info", timeout=10).json()
        if info["engine"] is not None or time.monotonic() > deadline:
            return info
        time.sleep(0.5)


def test_api_info_says_what_the_engine_can_do(stack):
    info = engine_info(stack.base)
    engine = info["engine"]
    assert engine is not None, info
    assert engine["js_runtime"]["name"] == "deno" and engine["js_runtime"]["supported"]
    assert engine["solver"]["version"] and engine["solver"]["error"] is None
    assert any(t.startswith("chrome") for t in engine["impersonate_targets"])
    assert engine["remote_components"] == []
    assert "bgutil:http" in engine["pot_providers"]
    assert [p for p in info["problems"] if not p.startswith("yt-dlp ")] == []


@pytest.mark.parametrize(
    ("value", "code"), [("opera", "impersonate_unavailable"), ("chrome 131", "invalid_impersonate")]
)
def test_an_impersonation_the_downloaders_cant_send_is_refused_naming_the_field(stack, media, value, code):
    engine_info(stack.base)
    response = httpx.post(
        f"{stack.base}/api/jobs", json={"url": media.url("clip1.mp4"), "impersonate": value}, timeout=10
    )
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert (error["field"], error["code"]) == ("impersonate", code), error


def test_impersonated_jobs_complete_on_split_streams_and_from_tubeflow_get(stack, media):
    engine_info(stack.base)
    view = wait_finished(
        stack, submit(stack, url=media.fresh_stream("dash", "manifest.mpd"), impersonate="chrome")["id"], timeout=90
    )
    assert view["status"] == "completed", [view["error"], *[i["error"] for i in view["items"]]]
    assert view["options"]["impersonate"] == "chrome"
    done = tubeflow_get(media.url(media.fresh("clip2.mp4")), "--impersonate", "safari", "--api", stack.base, "--json")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr


def closed_port() -> int:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_up_without_a_runtime_and_with_its_provider_down_says_so_once_and_goes_on(media, tmp_path):
    down = f"http://127.0.0.1:{closed_port()}"
    running = start_stack(
        tmp_path,
        {
            "TUBEFLOW_JS_RUNTIME": "none",
            "TUBEFLOW_POT_PROVIDER_URL": down,
            "TUBEFLOW_ALLOWED_NETWORKS": "127.0.0.0/8",
            "TUBEFLOW_RATE_LIMIT": "0",
        },
    )
    try:
        info = engine_info(running.base)
        assert info["engine"]["js_runtime"] is None
        problems = info["problems"]
        assert any("no JavaScript runtime" in p for p in problems), problems
        assert any(f"{down} does not answer" in p for p in problems), problems
        ready = httpx.get(f"{running.base}/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["pot_provider"] == "not answering", ready.text
        # Downloads of other sites are unaffected.
        response = httpx.post(f"{running.base}/api/jobs", json={"url": media.url("clip1.mp4")}, timeout=10)
        assert response.status_code == 202, response.text
        deadline = time.monotonic() + 60
        while (view := httpx.get(f"{running.base}/api/jobs/{response.json()['id']}", timeout=10).json())[
            "status"
        ] not in ("completed", "failed") and time.monotonic() < deadline:
            time.sleep(0.3)
        assert view["status"] == "completed", view
    finally:
        assert stop_stack(running) == 0
    said = [line for line in running.log.read_text().splitlines() if "real sites:" in line]
    assert len(said) == 1, said
    assert "no JavaScript runtime" in said[0] and f"{down} does not answer" in said[0] and "tubeflow doctor" in said[0]
