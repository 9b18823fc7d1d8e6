"""Fakes shared by the service tests: they record what a handler did instead of talking to NATS."""

from __future__ import annotations

from dataclasses import dataclass

from nats.js.errors import KeyWrongLastSequenceError

from contracts import events as ev


@dataclass
class PubAck:
    seq: int


class FakePublisher:
    """Keeps every published event and answers like JetStream: a stream sequence per event, and a duplicate event id
    gets the sequence it had the first time (the server's deduplication). Sequences continue after ``after``,
    like a stream that already holds a job's earlier events."""

    def __init__(self, after: int = 0) -> None:
        self.events: list[ev.Envelope] = []
        self._seqs: dict[str, int] = {}
        self._after = after

    async def publish(self, event: ev.Envelope) -> PubAck:
        if event.event_id not in self._seqs:
            self.events.append(event)
            self._seqs[event.event_id] = self._after + len(self.events)
        return PubAck(self._seqs[event.event_id])

    def types(self) -> list[str]:
        return [e.type for e in self.events]


@dataclass
class Entry:
    value: bytes


class FakeKeys:
    """A KV bucket's create/get: create fails on an existing key, as JetStream's does."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}

    async def create(self, key: str, value: bytes) -> int:
        if key in self.values:
            raise KeyWrongLastSequenceError()
        self.values[key] = value
        return len(self.values)

    async def get(self, key: str) -> Entry:
        return Entry(self.values[key])

    async def delete(self, key: str) -> bool:
        self.values.pop(key, None)
        return True
