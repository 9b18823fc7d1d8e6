"""Hostile input against a running `tubeflow up` (the parts that need uvicorn in front)."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import start_stack, stop_stack

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
