"""Publishing to JetStream: events with ``Nats-Msg-Id`` = event id and a checked acknowledgement, and dead letters."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from nats.js import JetStreamContext, api
from nats.js.errors import APIError

from contracts.events import Envelope, encode_event, subject
from services.runtime.nats.topology import DLQ_PREFIX, DLQ_STREAM, STREAM
from services.runtime.tracing import inject

# JetStream's answer while a message with the same Nats-Msg-Id is still being stored (a publish retried across a
# leader change in a cluster): the first may yet succeed or fail, so the publish is asked again shortly; once stored,
# the repeat is acknowledged as a duplicate.
DUPLICATE_IN_PROCESS = 10158
IN_PROCESS_RETRIES = 10


async def publish_once(
    js: JetStreamContext, subject_: str, data: bytes, *, stream: str, headers: dict[str, str], timeout: float = 5.0
) -> api.PubAck:
    """``js.publish`` for a message with a Nats-Msg-Id, asked again while the server says the same id is in
    process."""
    for attempt in range(IN_PROCESS_RETRIES):
        try:
            return await js.publish(subject_, data, timeout=timeout, stream=stream, headers=headers)
        except APIError as exc:
            if exc.err_code != DUPLICATE_IN_PROCESS or attempt == IN_PROCESS_RETRIES - 1:
                raise
            await asyncio.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


async def publish_system(js: JetStreamContext, event: Any) -> api.PubAck:
    """A fact about the installation (contracts.system: a site cooling down, an engine update) on TUBEFLOW_SYSTEM."""
    from contracts.system import system_subject
    from services.runtime.nats.topology import SYSTEM_STREAM

    return await publish_once(
        js,
        system_subject(event.type),
        event.model_dump_json().encode(),
        stream=SYSTEM_STREAM,
        headers={"Nats-Msg-Id": event.event_id},
    )


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
        return await publish_once(
            self._js, subject(event.job_id, event.type), encode_event(event), timeout=self._timeout, stream=STREAM,
            headers=headers,
        )  # fmt: skip


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
        await publish_once(self._js, f"{DLQ_PREFIX}.{self._consumer}", data, stream=DLQ_STREAM, headers=out)
        from services.runtime.metrics import DEAD_LETTERS

        DEAD_LETTERS.labels(self._consumer).inc()
