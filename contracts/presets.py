"""Presets: named bundles of job options (mode, audio format, format and the download options). Stored as events on
their own subjects, ``tubeflow.preset.<name>.saved|deleted`` (stream TUBEFLOW_PRESETS), and folded into the current
set the same way jobs are folded into views, so they replay and survive restarts. Presets from the operator's file
(TUBEFLOW_PRESETS_FILE) and the shipped examples are read-only and are not events."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.bounds import Instant

PRESET_PREFIX = "tubeflow.preset"
ALL_PRESETS = f"{PRESET_PREFIX}.>"
MAX_PRESETS = 200
MAX_DESCRIPTION = 300


def preset_subject(name: str, kind: Literal["saved", "deleted"]) -> str:
    return f"{PRESET_PREFIX}.{name}.{kind}"


class PresetEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    type: Literal["preset.saved", "preset.deleted"]
    name: str
    occurred_at: Instant
    # What the preset sets (only the fields it sets); empty for a deletion.
    fields: dict[str, Any] = {}
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)
    # Whose preset it is (issue 28): a person's own, seen and used by them only; None: everyone's (an admin's).
    owner: str | None = Field(default=None, max_length=128)


class Preset(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    description: str | None = None
    fields: dict[str, Any] = Field(description="the job fields the preset sets; a job's own fields override them")
    source: Literal["example", "file", "api"]
    updated_at: datetime | None = None
    owner: str | None = Field(default=None, description="whose it is (null: everyone's)")


def preset_key(name: str, owner: str | None) -> str:
    """Where a preset is kept: its name (everyone's) or ``owner/name`` (no user name or preset name holds a /)."""
    return f"{owner}/{name}" if owner else name


def fold_presets(events: Iterable[PresetEvent], base: dict[str, Preset] | None = None) -> dict[str, Preset]:
    """The presets after ``events``, over ``base`` (the read-only ones, which events can't change)."""
    presets = dict(base or {})
    for event in events:
        apply_preset(presets, event)
    return presets


def apply_preset(presets: dict[str, Preset], event: PresetEvent) -> None:
    key = preset_key(event.name, event.owner)
    current = presets.get(key)
    if current is not None and current.source != "api":
        return  # an example or the operator's file wins
    if event.type == "preset.deleted":
        presets.pop(key, None)
    else:
        presets[key] = Preset(
            name=event.name,
            description=event.description,
            fields=event.fields,
            source="api",
            updated_at=event.occurred_at,
            owner=event.owner,
        )


EXAMPLES: dict[str, dict[str, Any]] = {
    "audio-mp3": {"description": "Audio only, as MP3", "mode": "audio", "audio_format": "mp3"},
    "audio-opus": {"description": "Audio only, as Opus (smaller, as good)", "mode": "audio", "audio_format": "opus"},
    "1080p-mp4": {
        "description": "Up to 1080p in MP4, H.264 preferred",
        "quality": "1080",
        "container": "mp4",
        "video_codec": "h264",
    },
    "720p-mp4": {
        "description": "Up to 720p in MP4, H.264 preferred",
        "quality": "720",
        "container": "mp4",
        "video_codec": "h264",
    },
    "podcast": {
        "description": "Audio as M4A, SponsorBlock's sponsor segments cut (YouTube only)",
        "mode": "audio",
        "audio_format": "m4a",
        "sponsorblock": {"remove": ["sponsor"]},
    },
    "jellyfin-show": {
        "description": "A channel or playlist as a TV show for Jellyfin or Emby: seasons by year, NFO files, artwork",
        "quality": "1080",
        "container": "mp4",
        "library": {"kind": "show", "nfo": True, "artwork": True},
    },
    "plex-show": {
        "description": "A channel or playlist as a TV show for Plex: seasons by year, poster and episode thumbnails",
        "quality": "1080",
        "container": "mp4",
        "library": {"kind": "show", "nfo": False, "artwork": True},
    },
    "kodi-show": {
        "description": "A channel or playlist as a TV show for Kodi: seasons by year, NFO files, artwork",
        "quality": "1080",
        "container": "mp4",
        "library": {"kind": "show", "nfo": True, "artwork": True},
    },
    "archive": {
        "description": "Best quality in MKV with every subtitle, the thumbnail and chapters embedded",
        "container": "mkv",
        "subtitles": {"languages": ["all"], "embed": True},
        "thumbnail": "embed",
    },
}
