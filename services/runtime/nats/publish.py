"""Publishing to JetStream: events with ``Nats-Msg-Id`` = event id and a checked acknowledgement, and dead letters."""

from __future__ import annotations

from typing import Any, Protocol

from nats.js import JetStreamContext, api

from contracts.events import Envelope, encode_event, subject
from services.runtime.nats.topology import DLQ_PREFIX, DLQ_STREAM, STREAM
from services.runtime.tracing import inject


class Publisher(Protocol):
    async def publish(self, event: Envelope) -> Any: ...


class EventPublisher:
    """Publishes events with Nats-Msg-Id = event id and checks the JetStream acknowledgement."""

    def __init__(self, js: JetStreamContext, *, timeout: float = 5.0) -> None:
        self._js = js
        self._timeout = timeout

    async def publish(self, event: Envelope) -> api.PubAck:
        headers = {"Nats-Msg-Id": event.event_id}
        inject(headers)
        return await self._js.publish(
            subject(event.job_id, event.type),
            encode_event(event),
            timeout=self._timeout,
            stream=STREAM,
            headers=headers,
        )


class DeadLetters:
    """Sends a message a consumer gives up on to `tubeflow.dlq.<consumer>`, keeping its headers and saying why."""

    def __init__(self, js: JetStreamContext, consumer: str) -> None:
        self._js = js
        self._consumer = consumer

    async def send(
        self, subject_: str, data: bytes, headers: dict[str, str] | None, stream_seq: int, deliveries: int, reason: str
    ) -> None:
        out = dict(headers or {})
        if "Nats-Msg-Id" in out:
            out["Tubeflow-Dlq-Original-Msg-Id"] = out["Nats-Msg-Id"]
        out.update(
            {
                "Nats-Msg-Id": f"dlq:{self._consumer}:{stream_seq}",
                "Tubeflow-Dlq-Consumer": self._consumer,
                "Tubeflow-Dlq-Subject": subject_,
                "Tubeflow-Dlq-Stream-Seq": str(stream_seq),
                "Tubeflow-Dlq-Deliveries": str(deliveries),
                "Tubeflow-Dlq-Reason": reason.replace("\r", " ").replace("\n", " ")[:2000],
            }
        )
        await self._js.publish(f"{DLQ_PREFIX}.{self._consumer}", data, stream=DLQ_STREAM, headers=out, timeout=5.0)
        from services.runtime.metrics import DEAD_LETTERS

        DEAD_LETTERS.labels(self._consumer).inc()
