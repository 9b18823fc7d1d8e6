"""`tubeflow up` starts a worker service again when it stopped because NATS did not answer (a cluster still electing
its leaders): one `nats: timeout` at start stopped every service of `up --cluster 3` (seen in a full test run)."""

from __future__ import annotations

import asyncio

import nats.errors
import pytest

from services.cli import up


async def test_a_service_stopped_by_a_nats_timeout_is_started_again_and_other_errors_are_not(monkeypatch):
    monkeypatch.setattr(up, "RESTARTS", 3)
    runs: list[int] = []

    async def flaky(settings, stop) -> None:  # noqa: ANN001
        runs.append(1)
        if len(runs) < 3:
            raise nats.errors.TimeoutError

    stop = asyncio.Event()
    await asyncio.wait_for(up._restarting("progress", flaky, None, stop), 10)  # type: ignore[arg-type]
    assert len(runs) == 3

    async def broken(settings, stop) -> None:  # noqa: ANN001
        runs.append(1)
        raise ValueError("a bug")

    runs.clear()
    with pytest.raises(ValueError):
        await up._restarting("progress", broken, None, stop)  # type: ignore[arg-type]
    assert len(runs) == 1

    async def always(settings, stop) -> None:  # noqa: ANN001
        runs.append(1)
        raise nats.errors.TimeoutError

    runs.clear()
    monkeypatch.setattr(up, "RESTARTS", 1)
    with pytest.raises(nats.errors.TimeoutError):
        await up._restarting("progress", always, None, stop)  # type: ignore[arg-type]
    assert len(runs) == 2
