"""Hostile input against a running `tubeflow up` (the parts that need uvicorn in front)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import start_stack, stop_stack

pytestmark = pytest.mark.e2e


def test_x_forwarded_for_does_not_buy_a_fresh_rate_limit(tmp_path):
    # Its own embedded NATS: a second projector on the session's NATS under the same host name would share its
    # durable consumer (see docs/reliability.md).
    stack = start_stack(tmp_path / "data", {"TUBEFLOW_NATS_URL": "", "TUBEFLOW_RATE_LIMIT": "2"})
    try:
        codes = [
            httpx.post(
                f"{stack.base}/api/jobs",
                json={"url": "http://video.example.com/v"},
                headers={"X-Forwarded-For": f"203.0.113.{n}"},
                timeout=10,
            ).status_code
            for n in range(3)
        ]
        assert codes == [202, 202, 429]
    finally:
        stop_stack(stack)
