"""A NATS server of a test's own (an embedded nats-server, the topology declared) for service tests that must not
share state with others."""

from __future__ import annotations

from typing import AsyncIterator

import pytest

from services.runtime.embedded import EmbeddedNats
from services.runtime.nats import connect, ensure_topology


@pytest.fixture
async def fresh_nc(tmp_path) -> AsyncIterator:
    server = EmbeddedNats(tmp_path / "nats")
    nc = await connect(server.start(), "service-test")
    await ensure_topology(nc.jetstream())
    yield nc
    await nc.close()
    server.stop()


@pytest.fixture
async def js(fresh_nc):  # noqa: ANN201
    return fresh_nc.jetstream()
