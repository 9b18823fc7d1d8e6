"""SSE events as a browser's EventSource dispatches them, read with httpx-sse."""

from __future__ import annotations

from typing import AsyncIterator

import httpx
from httpx_sse import EventSource, ServerSentEvent


async def sse_events(response: httpx.Response) -> AsyncIterator[ServerSentEvent]:
    """Every event of a streaming response. A block without data (the stream's first `retry:` line) is no event to
    EventSource, but httpx-sse hands it out; it is left out here."""
    async for event in EventSource(response).aiter_sse():
        if event.data:
            yield event
