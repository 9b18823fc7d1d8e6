"""The API's presets: the shipped examples, the operator's file (TUBEFLOW_PRESETS_FILE) and the ones saved through the
API, which are events on TUBEFLOW_PRESETS folded here (contracts/presets.py). Every API replica follows the stream,
so a preset saved through one is used by all; a restart reads the stream again."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext

from contracts.presets import (
    ALL_PRESETS,
    EXAMPLES,
    MAX_PRESETS,
    Preset,
    PresetEvent,
    apply_preset,
    preset_key,
    preset_subject,
)
from services.runtime.jsonfile import SettingsFileError, read_json_object
from services.runtime.nats.follow import follow, unfollow
from services.runtime.nats.topology import PRESETS_STREAM

log = logging.getLogger("tubeflow.api.presets")


class PresetFileError(SettingsFileError):
    pass


def read_only_presets(path: Path | None, check) -> dict[str, Preset]:  # noqa: ANN001
    """The examples, then the operator's file over them. ``check(name, fields)`` validates a preset (the API's own
    rules: the same as for a job) and raises ValueError naming the problem."""
    presets: dict[str, Preset] = {}
    for name, body in EXAMPLES.items():
        fields = {k: v for k, v in body.items() if k != "description"}
        check(name, fields)
        presets[name] = Preset(name=name, description=body.get("description"), fields=fields, source="example")
    if path is None:
        return presets
    loaded = read_json_object(path, "TUBEFLOW_PRESETS_FILE", "name -> preset")
    for name, body in loaded.items():
        if not isinstance(body, dict):
            raise PresetFileError(f"TUBEFLOW_PRESETS_FILE {path}: preset {name!r} is not an object")
        fields = {k: v for k, v in body.items() if k != "description"}
        try:
            check(name, fields)
        except ValueError as exc:
            raise PresetFileError(f"TUBEFLOW_PRESETS_FILE {path}: preset {name!r}: {exc}") from None
        presets[name] = Preset(name=name, description=body.get("description"), fields=fields, source="file")
    return presets


class PresetBook:
    def __init__(self, read_only: dict[str, Preset]) -> None:
        self._presets: dict[str, Preset] = dict(read_only)
        self._seq = 0
        self._js: JetStreamContext | None = None
        self._sub: Any = None

    async def start(self, js: JetStreamContext, timeout: float = 30.0) -> None:
        """Fold the stream's presets, then keep following it; returns once caught up with the stream's end."""
        self._js = js

        def on_message(msg) -> None:  # noqa: ANN001
            try:
                event = PresetEvent.model_validate_json(msg.data)
            except ValueError as exc:
                log.error("unreadable preset event on %s: %s", msg.subject, exc)
            else:
                apply_preset(self._presets, event)
            self._seq = max(self._seq, msg.metadata.sequence.stream)

        self._sub = await follow(js, PRESETS_STREAM, ALL_PRESETS, on_message, timeout)

    async def stop(self) -> None:
        await unfollow(self._sub)

    def get(self, name: str, user: str | None = None) -> Preset | None:
        """The preset ``name`` as ``user`` sees it: their own first, then everyone's."""
        return (self._presets.get(preset_key(name, user)) if user else None) or self._presets.get(name)

    def all(self, user: str | None = None) -> list[Preset]:
        """Everyone's and ``user``'s own (None: every preset, for an admin)."""
        shown = [p for p in self._presets.values() if user is None or p.owner in (None, user)]
        return sorted(shown, key=lambda preset: (preset.name, preset.owner or ""))

    async def save(
        self, name: str, fields: dict[str, Any], description: str | None, owner: str | None = None
    ) -> Preset | str:
        """Store the preset (an event, folded here at once) as ``owner``'s (None: everyone's); a string says why not
        (read-only, too many)."""
        key = preset_key(name, owner)
        current = self._presets.get(key)
        shared = self._presets.get(name)
        if shared is not None and shared.source != "api":
            return _read_only(shared, "changed")
        if current is not None and current.source != "api":
            return _read_only(current, "changed")
        if (
            current is None
            and sum(p.source == "api" and p.owner == owner for p in self._presets.values()) >= MAX_PRESETS
        ):
            return f"at most {MAX_PRESETS} presets"
        event = PresetEvent(
            type="preset.saved",
            name=name,
            occurred_at=datetime.now(timezone.utc),
            fields=fields,
            description=description,
            owner=owner,
        )
        await self._publish(event, "saved")
        return self._presets[key]

    async def delete(self, name: str, owner: str | None = None) -> bool | str:
        current = self._presets.get(preset_key(name, owner))
        if current is None:
            return False
        if current.source != "api":
            return _read_only(current, "deleted")
        await self._publish(
            PresetEvent(type="preset.deleted", name=name, occurred_at=datetime.now(timezone.utc), owner=owner),
            "deleted",
        )
        return True

    async def _publish(self, event: PresetEvent, kind: str) -> None:
        assert self._js is not None
        ack = await self._js.publish(
            preset_subject(event.name, kind),  # type: ignore[arg-type]
            event.model_dump_json().encode(),
            stream=PRESETS_STREAM,
            headers={"Nats-Msg-Id": uuid.uuid4().hex},
        )
        # Read your own write: applied now (the subscription applies it again, to the same result).
        apply_preset(self._presets, event)
        self._seq = max(self._seq, ack.seq)


def _read_only(preset: Preset, what: str) -> str:
    origin = "the shipped examples" if preset.source == "example" else "TUBEFLOW_PRESETS_FILE"
    return f"preset {preset.name} comes from {origin} and can't be {what} here"
