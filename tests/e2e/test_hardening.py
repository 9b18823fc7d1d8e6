"""Hostile input against a running `tubeflow up` (the parts that need uvicorn in front)."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from tests.conftest import start_stack, stop_stack
from tests.support.sse import sse_events

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    # Its own embedded NATS: a second projector on the session's NATS under the same host name would share its
    # durable consumer (see docs/reliability.md).
    stack = start_stack(
        tmp_path_factory.mktemp("strict") / "data",
        {"TUBEFLOW_NATS_URL": "", "TUBEFLOW_RATE_LIMIT": "2", "TUBEFLOW_SSE_MAX_STREAMS_PER_CLIENT": "2"},
    )
    try:
        yield stack
    finally:
        stop_stack(stack)


def test_x_forwarded_for_does_not_buy_a_fresh_rate_limit(strict):
    codes = [
        httpx.post(
            f"{strict.base}/api/jobs",
            json={"url": "http://video.example.com/v"},
            headers={"X-Forwarded-For": f"203.0.113.{n}"},
            timeout=10,
        ).status_code
        for n in range(3)
    ]
    assert codes == [202, 202, 429]


def test_open_streams_are_limited_per_client_and_freed_when_they_close(strict):
    path = f"{strict.base}/api/jobs/stream"
    with httpx.Client(timeout=10) as client:
        with client.stream("GET", path) as first, client.stream("GET", path) as second:
            assert first.status_code == 200 and second.status_code == 200
            third = client.get(path)
            assert third.status_code == 429 and third.headers["retry-after"] == "5"
            assert third.json()["errors"][0]["code"] == "too_many_streams"
    deadline = time.monotonic() + 10
    while True:  # the server notices the closed connections at its next heartbeat or write
        with httpx.Client(timeout=10) as client, client.stream("GET", path) as again:
            if again.status_code == 200:
                break
        assert time.monotonic() < deadline, "closed streams kept their slots"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def trap():
    """A listener that counts the connections it gets: pointed at by the environment's proxy variables."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    accepted: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(conn)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    stop.set()
    thread.join(2)
    listener.close()


@pytest.fixture(scope="module")
def fetching(tmp_path_factory, trap):
    proxy, _ = trap
    stack = start_stack(
        tmp_path_factory.mktemp("fetching") / "data",
        {
            "TUBEFLOW_NATS_URL": "",
            "TUBEFLOW_ALLOWED_NETWORKS": "127.0.0.0/8",
            "TUBEFLOW_RATE_LIMIT": "0",
            "TUBEFLOW_MAX_PLAYLIST_ITEMS": "10000",
            **{name: proxy for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY")},
        },
    )
    try:
        yield stack
    finally:
        stop_stack(stack)


def submit(stack, url: str) -> str:
    response = httpx.post(f"{stack.base}/api/jobs", json={"url": url, "mode": "video"}, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def wait_view(stack, job_id: str, done, timeout: float = 60) -> dict:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = httpx.get(f"{stack.base}/api/jobs/{job_id}", timeout=10).json()
        if done(view):
            return view
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not as expected after {timeout} s: {view}")


def finished(view: dict) -> bool:
    return view["status"] in ("completed", "partial", "failed", "cancelled")


def test_proxy_variables_of_the_environment_are_not_used(fetching, trap, media):
    _, accepted = trap
    job = submit(fetching, media.url(media.fresh("clip1.mp4")))
    assert wait_view(fetching, job, finished)["status"] == "completed"
    assert accepted == [], "a download went through the environment's proxy"


def test_cancel_frees_resolves_stuck_on_silent_servers(fetching, media):
    # Both resolve slots wait on a server that answers nothing for a minute; cancelling the jobs kills those
    # resolves, so the next job resolves at once instead of waiting for a free slot.
    stuck = [submit(fetching, f"{media.base}/stall/60/clip{n}.mp4") for n in (1, 2)]
    for job in stuck:
        wait_view(fetching, job, lambda v: v["status"] == "resolving")
    time.sleep(0.5)
    for job in stuck:
        assert httpx.post(f"{fetching.base}/api/jobs/{job}/cancel", timeout=10).status_code == 202
    for job in stuck:
        assert wait_view(fetching, job, finished, timeout=10)["status"] == "cancelled"
    after = submit(fetching, media.url(media.fresh("clip3.mp4")))
    assert wait_view(fetching, after, finished, timeout=20)["status"] == "completed"


async def test_a_ten_thousand_item_playlist_with_long_titles_resolves_lists_streams_and_reads(fetching, media):
    """No stored value grows with a job's items (a summary plus pages of 100), and titles are cut: a 10,000-item
    playlist with 1,500-character titles is resolved, listed, read whole and streamed; another job completes."""
    big = submit(fetching, f"{media.base}/feed.xml?count=10000&name=clip1.mp4&title=1500")
    deadline = time.monotonic() + 120
    while True:  # a whole view is ~10 MB here: read it twice a second at most
        response = httpx.get(f"{fetching.base}/api/jobs/{big}", timeout=30)
        # A 503 (NATS slow to answer while the projector writes 100 pages) says to try again; nothing else may come.
        assert response.status_code in (200, 503), response.text[:2000]
        if response.status_code == 200:
            view = response.json()
            if len(view["items"]) == 10000 or finished(view):
                break
        assert time.monotonic() < deadline, response.text[:2000]
        time.sleep(0.5)
    assert len(view["items"]) == 10000 and view["item_count"] == 10000, view.get("error")
    assert all(len(item["title"]) <= 300 and item["title"].endswith("…") for item in view["items"])
    assert [item["index"] for item in view["items"]] == list(range(1, 10001))
    listed = httpx.get(f"{fetching.base}/api/jobs", timeout=10).json()["jobs"]
    assert any(summary["id"] == big for summary in listed)
    # The SSE snapshot: every item once, then the job.
    seen: set[str] = set()
    async with httpx.AsyncClient(timeout=httpx.Timeout(60)) as client:
        async with client.stream("GET", f"{fetching.base}/api/jobs/{big}/stream") as response:
            assert response.status_code == 200
            async for message in sse_events(response):
                if message.event == "item":
                    seen.add(message.json()["id"])
                elif message.event == "job":
                    break
    assert len(seen) == 10000
    assert httpx.post(f"{fetching.base}/api/jobs/{big}/cancel", timeout=10).status_code == 202
    assert wait_view(fetching, big, finished, timeout=60)["status"] == "cancelled"
    small = submit(fetching, media.url(media.fresh("clip2.mp4")))
    assert wait_view(fetching, small, finished, timeout=30)["status"] == "completed"
