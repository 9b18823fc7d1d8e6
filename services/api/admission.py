"""What a job must pass before it is accepted, beyond its model's own checks: its preset (merged under the job's own
fields), the address policy for its URL, the playlist cap, its cookie profile. Shared by one job and a batch."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from pydantic import ValidationError

from contracts.engine import target_available
from contracts.options import impersonate_client
from services.api.engine import EngineBook
from services.api.errors import ApiError, field_error
from services.api.presets import PresetBook
from services.api.requests import JobRequest, error_code
from services.runtime.addresses import AddressPolicy
from services.runtime.cookies import CookieStore
from services.runtime.settings import Settings


def invalid(exc: ValidationError, rename=lambda field: field) -> ApiError:  # noqa: ANN001
    """A pydantic error of a model the API builds itself (not Litestar's body parsing), in the API's shape;
    ``rename`` maps a field's dotted path to the name the client knows it by."""
    errors = [
        {
            "field": rename(".".join(map(str, e["loc"]))),
            "code": error_code(e["msg"]),
            "message": e["msg"].removeprefix("Value error, "),
        }
        for e in exc.errors()
    ]
    return ApiError(422, "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors)


@dataclass(frozen=True)
class Admission:
    settings: Settings
    address_policy: AddressPolicy
    cookie_store: CookieStore
    presets: PresetBook
    engines: EngineBook | None = None

    async def check(self, data: JobRequest, url_field: str = "url", user: str | None = None) -> JobRequest:
        """The job as it will run (its preset's fields under its own), or an ApiError naming the field. ``user``:
        whose presets and cookie profiles it may name besides everyone's."""
        if data.preset is not None:
            preset = self.presets.get(data.preset, user)
            if preset is None:
                raise field_error(422, "preset", "unknown_preset", f"no preset {data.preset!r} (GET /api/presets)")
            try:
                data = data.with_preset(preset.fields)
            except ValidationError as exc:
                raise invalid(exc) from None
        reason = self.address_policy.url_reason(data.url)
        if reason:
            raise field_error(
                422, url_field, "forbidden_address", f"refused: {reason}", detail=f"{url_field}: {reason}"
            )
        cap = self.settings.max_playlist_items
        if data.playlist_items and max(map(int, re.findall(r"\d+", data.playlist_items))) > cap:
            # yt-dlp would walk the playlist up to the highest entry asked for before the cap applies.
            raise field_error(
                422,
                "playlist_items",
                "too_large",
                f"entries above {cap} (TUBEFLOW_MAX_PLAYLIST_ITEMS) can't be asked for",
            )
        if data.cookies:
            # A person's own profile of that name, else everyone's: the job says whose, for the downloader.
            whose = await asyncio.to_thread(self.cookie_store.find, data.cookies, user)
            if whose is False:
                raise field_error(
                    422,
                    "cookies",
                    "unknown_cookies",
                    f"no cookie profile {data.cookies!r} (GET /api/cookies lists them)",
                )
            if whose:
                data = data.model_copy(update={"cookies_owner": whose})
        if data.impersonate and self.engines is not None:
            targets = await self.engines.impersonate_targets()
            # Before any downloader has said what it can send, the job is taken (its download fails with
            # impersonate_unavailable if none can).
            if targets is not None and not target_available(data.impersonate, targets):
                clients = sorted({impersonate_client(t) for t in targets})
                raise field_error(
                    422,
                    "impersonate",
                    "impersonate_unavailable",
                    f"no downloader can impersonate {data.impersonate!r} "
                    f"(available: {', '.join(clients) or 'none: curl_cffi is missing'}; GET /api/info lists them all)",
                )
        return data
