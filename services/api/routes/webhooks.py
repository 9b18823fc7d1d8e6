"""Webhooks: register where finished jobs are announced (signed JSON POSTs), list them, and read their deliveries."""

from __future__ import annotations

from datetime import datetime, timezone

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, JSONBody, SkipValidation
from nats.js.kv import KeyValue
from pydantic import BaseModel, Field, field_validator

from services.api.errors import error_responses, field_error
from services.api.ownership import may_see, owner_filter
from services.runtime.addresses import AddressPolicy
from services.runtime.clock import utcnow
from services.runtime.deliveries import Delivery
from services.runtime.nats.kv import read_bucket
from services.runtime.webhooks import MAX_WEBHOOKS, Webhook, WebhookEvent, WebhookStore, new_id, new_secret

MAX_DELIVERIES_LISTED = 200


class WebhookRequest(BaseModel):
    url: str = Field(max_length=2048, description="http(s) URL that receives the POSTs")
    events: list[WebhookEvent] = Field(min_length=1, max_length=5)
    secret: str | None = Field(default=None, min_length=16, max_length=256, description="unset: one is made")
    description: str | None = Field(default=None, max_length=200)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or any(c.isspace() for c in value):
            raise ValueError("must be an http or https URL")
        return value


class WebhookCreated(BaseModel):
    webhook: dict
    secret: str = Field(description="shown once: sign-checks use it")


class WebhooksController(Controller):
    path = "/api/webhooks"
    tags = ["notifications"]

    @post("/", status_code=201, summary="Register a webhook", responses=error_responses(401, 422))
    async def create(
        self,
        request: Request,
        data: JSONBody[WebhookRequest],
        webhooks: NamedDependency[WebhookStore],
        address_policy: NamedDependency[SkipValidation[AddressPolicy]],
    ) -> WebhookCreated:
        reason = address_policy.url_reason(data.url)
        if reason:
            raise field_error(422, "url", "forbidden_address", f"refused: {reason}")
        owner = owner_filter(request)
        existing = await webhooks.all()
        if len(existing) >= MAX_WEBHOOKS:
            raise field_error(422, "url", "too_many", f"at most {MAX_WEBHOOKS} webhooks")
        if owner is not None and sum(hook.owner == owner for hook in existing) >= MAX_WEBHOOKS_PER_USER:
            raise field_error(422, "url", "too_many", f"at most {MAX_WEBHOOKS_PER_USER} webhooks per person")
        hook = Webhook(
            id=new_id(),
            url=data.url,
            events=list(dict.fromkeys(data.events)),
            secret=data.secret or new_secret(),
            created_at=utcnow(),
            description=data.description,
            owner=owner,
        )
        await webhooks.put(hook)
        return WebhookCreated(webhook=hook.public(), secret=hook.secret)

    @get("/", summary="The webhooks (without their secrets): your own (an admin: every one)")
    async def list_webhooks(self, request: Request, webhooks: NamedDependency[WebhookStore]) -> list[dict]:
        return [hook.public() for hook in await webhooks.all() if may_see(request, hook.owner)]

    @get("/{webhook_id:str}", summary="One webhook", responses=error_responses(401, 404))
    async def get_webhook(
        self, request: Request, webhook_id: FromPath[str], webhooks: NamedDependency[WebhookStore]
    ) -> dict:
        return (await _own(request, webhooks, webhook_id)).public()

    @delete("/{webhook_id:str}", status_code=204, summary="Remove a webhook", responses=error_responses(401, 404))
    async def delete_webhook(
        self, request: Request, webhook_id: FromPath[str], webhooks: NamedDependency[WebhookStore]
    ) -> None:
        await _own(request, webhooks, webhook_id)
        if not await webhooks.delete(webhook_id):
            raise NotFoundException(f"no webhook {webhook_id}")

    @get("/{webhook_id:str}/deliveries", summary="The webhook's deliveries", responses=error_responses(401, 404))
    async def deliveries(
        self,
        request: Request,
        webhook_id: FromPath[str],
        webhooks: NamedDependency[WebhookStore],
        deliveries: NamedDependency[KeyValue],
    ) -> Response[list[dict]]:
        await _own(request, webhooks, webhook_id)
        stored = await read_bucket(deliveries, f"{webhook_id}.>")
        out = []
        for key in sorted(stored)[:MAX_DELIVERIES_LISTED]:
            record = Delivery.decode(stored[key])
            # Times as ISO 8601, as everywhere else in the API (the records keep epoch seconds).
            out.append({k: _iso(v) if k.endswith("_at") else v for k, v in record.__dict__.items() if k != "body"})
        return Response(sorted(out, key=lambda r: r["created_at"]))


async def _own(request: Request, webhooks: WebhookStore, webhook_id: str) -> Webhook:
    """The webhook, when it is the caller's (an admin's: any); 404 otherwise, as if there were none."""
    hook = await webhooks.get(webhook_id)
    if hook is None or not may_see(request, hook.owner):
        raise NotFoundException(f"no webhook {webhook_id}")
    return hook


MAX_WEBHOOKS_PER_USER = 20


def _iso(value: object) -> object:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, timezone.utc).isoformat().replace("+00:00", "Z")
    return value


ROUTES = [WebhooksController]
