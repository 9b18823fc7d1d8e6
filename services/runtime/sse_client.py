"""A small SSE client: parses `text/event-stream` from an httpx streaming response (used by `tubeflow get` and tests)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, AsyncIterator

import httpx


@dataclass
class SseMessage:
    event: str
    id: int | None
    data: str
    comment: bool = False

    def json(self) -> Any:
        return json.loads(self.data)


async def sse_messages(response: httpx.Response, *, include_comments: bool = False) -> AsyncIterator[SseMessage]:
    event, data, msg_id = "message", [], None
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield SseMessage(event, msg_id, "\n".join(data))
            event, data, msg_id = "message", [], None
            continue
        if line.startswith(":"):
            if include_comments:
                yield SseMessage("comment", None, line[1:].strip(), comment=True)
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            msg_id = int(value)
    if data:
        yield SseMessage(event, msg_id, "\n".join(data))
