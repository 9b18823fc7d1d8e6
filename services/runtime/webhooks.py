"""Webhooks: where to announce what (stored in the webhooks bucket, id -> JSON). Shared by the API (which registers
them) and the notifier (which delivers)."""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from typing import Literal

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from contracts.ids import new_job_id
from services.runtime.nats.kv import read_bucket

WebhookEvent = Literal["job.completed", "job.failed", "job.partial", "job.cancelled", "subscription.new_items"]
MAX_WEBHOOKS = 100
WEBHOOK_ID = re.compile(r"wh[0-9a-z]{26}")


class Webhook(BaseModel):
    id: str
    url: str
    events: list[WebhookEvent]
    secret: str
    created_at: datetime
    description: str | None = None
    # Whose (issue 28): a person's webhook hears of their own jobs and subscriptions only; None: of everyone's
    # (an admin's).
    owner: str | None = None

    def hears(self, owner: str | None) -> bool:
        """Whether it is told about work of ``owner``."""
        return self.owner is None or self.owner == owner

    def public(self) -> dict:
        """The webhook without its secret (lists and reads)."""
        return self.model_dump(mode="json", exclude={"secret"})


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def new_id() -> str:
    return "wh" + new_job_id()


class WebhookStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def put(self, webhook: Webhook) -> None:
        await self._kv.put(webhook.id, webhook.model_dump_json().encode())

    async def get(self, webhook_id: str) -> Webhook | None:
        if not WEBHOOK_ID.fullmatch(webhook_id):
            return None  # not an id this store makes (and maybe not a valid KV key at all)
        try:
            entry = await self._kv.get(webhook_id)
        except (KeyNotFoundError, ValueError):
            return None
        return Webhook.model_validate_json(entry.value) if entry.value else None

    async def delete(self, webhook_id: str) -> bool:
        if await self.get(webhook_id) is None:
            return False
        await self._kv.delete(webhook_id)
        return True

    async def all(self) -> list[Webhook]:
        """Every webhook, complete (``read_bucket``: nats-py's key listing came back empty 1 time in 60)."""
        stored = await read_bucket(self._kv)
        ids = sorted(key for key in stored if WEBHOOK_ID.fullmatch(key))  # the bucket keeps a note or two besides
        return [Webhook.model_validate_json(stored[key]) for key in ids[:MAX_WEBHOOKS]]
