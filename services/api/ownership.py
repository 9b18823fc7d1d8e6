"""Whose work a request may see (issue 28): an admin sees everything; anyone else their own jobs and subscriptions
only. Someone else's is answered as if it did not exist (404: no existence leak)."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotFoundException

from services.api.access import identity_of


def owner_filter(connection: ASGIConnection) -> str | None:
    """The owner a list is narrowed to (None: everything, for an admin)."""
    identity = identity_of(connection)
    return None if identity.role == "admin" else identity.user


def may_see(connection: ASGIConnection, owner: str | None) -> bool:
    wanted = owner_filter(connection)
    return wanted is None or owner == wanted


def actor(connection: ASGIConnection) -> str:
    return identity_of(connection).user


async def job_owner(hub: Any, reads: Any, job_id: str) -> tuple[bool, str | None]:
    """(whether the job exists, its owner): from the live index, else from its `requested` event."""
    summary = hub.index.summaries.get(job_id) if hub is not None else None
    if summary is not None:
        return True, summary.owner
    requested = await reads.requested(job_id)
    if requested is None:
        return False, None
    return True, requested.owner


async def check_job(connection: ASGIConnection, hub: Any, reads: Any, job_id: str) -> None:
    """404 for a job that does not exist, or is someone else's (an admin sees every one)."""
    if owner_filter(connection) is None:
        return
    exists, owner = await job_owner(hub, reads, job_id)
    if not exists or not may_see(connection, owner):
        raise NotFoundException(f"no job {job_id}")
