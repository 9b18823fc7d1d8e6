"""How a work consumer settles a message, with a fake message: on the last delivery a dead letter that fails to
publish is retried in place, never lost from both the work and the dead-letter stream."""

from __future__ import annotations

from types import SimpleNamespace

from contracts import events as ev
from contracts.ids import new_job_id
from services.runtime.nats.work import handle
from tests.unit.test_fold import T0


class FakeMsg:
    def __init__(self, data: bytes, delivered: int) -> None:
        metadata = SimpleNamespace(num_delivered=delivered, sequence=SimpleNamespace(stream=7))
        self.raw_message = SimpleNamespace(metadata=metadata, subject="tubeflow.job.x.requested", data=data, headers={})
        self.settled: list[str] = []

    async def ack(self) -> None:
        self.settled.append("ack")

    async def nack(self, delay: float | None = None) -> None:
        self.settled.append("nack")

    async def reject(self) -> None:
        self.settled.append("reject")

    async def in_progress(self) -> None:
        self.settled.append("in_progress")


class FlakyDeadLetters:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[str] = []

    async def send(self, subject, data, headers, stream_seq, deliveries, reason) -> None:  # noqa: ANN001
        if self.failures:
            self.failures -= 1
            raise ConnectionError("NATS is away")
        self.sent.append(reason)


async def test_a_dead_letter_that_fails_on_the_last_delivery_is_published_in_place():
    event = ev.make_event(
        "requested", job_id=new_job_id(), data=ev.Requested(url="http://m/v"), occurred_at=T0, event_id="r"
    )

    async def always_fails(event, attempt):  # noqa: ANN001, ANN202
        raise RuntimeError("a bug")

    msg = FakeMsg(ev.encode_event(event), delivered=10)
    dead_letters = FlakyDeadLetters(failures=2)
    await handle(msg, always_fails, dead_letters=dead_letters, retry_delay=0.01, max_deliver=10)  # type: ignore[arg-type]
    assert len(dead_letters.sent) == 1 and "a bug" in dead_letters.sent[0]
    assert msg.settled[-1] == "reject" and "nack" not in msg.settled
    assert msg.settled.count("in_progress") >= 2  # kept from being redelivered meanwhile


async def test_poison_is_dead_lettered_at_once():
    msg = FakeMsg(b"not json", delivered=1)
    dead_letters = FlakyDeadLetters(failures=0)

    async def never(event, attempt):  # noqa: ANN001, ANN202
        raise AssertionError("poison reached the handler")

    await handle(msg, never, dead_letters=dead_letters)  # type: ignore[arg-type]
    assert msg.settled == ["reject"] and dead_letters.sent[0].startswith("invalid event")
