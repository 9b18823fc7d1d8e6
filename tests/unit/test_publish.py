"""A publish JetStream answers "duplicate message id is in process" (a retry across a leader change) is asked again
until the first is stored; other errors go up at once."""

from __future__ import annotations

import pytest
from nats.js.errors import APIError

from services.runtime.nats.publish import DUPLICATE_IN_PROCESS, publish_once


class FlakyJetStream:
    def __init__(self, failures: int, code: int) -> None:
        self.failures, self.code, self.calls = failures, code, 0

    async def publish(self, subject, data, **kwargs):  # noqa: ANN001, ANN003, ANN201
        self.calls += 1
        if self.calls <= self.failures:
            raise APIError(code=409, err_code=self.code, description="duplicate message id is in process")
        return "ack"


async def test_a_message_in_process_is_published_again_until_stored():
    js = FlakyJetStream(2, DUPLICATE_IN_PROCESS)
    assert await publish_once(js, "s", b"x", stream="S", headers={"Nats-Msg-Id": "1"}) == "ack"
    assert js.calls == 3


async def test_other_errors_are_not_retried():
    js = FlakyJetStream(1, 10071)
    with pytest.raises(APIError):
        await publish_once(js, "s", b"x", stream="S", headers={"Nats-Msg-Id": "1"})
    assert js.calls == 1
