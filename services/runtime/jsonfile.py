"""Operator files read at start (presets, extra YoutubeDL params): one JSON object, or a clear error naming the
setting and the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class SettingsFileError(ValueError):
    """A file a setting names can't be used; the message names the setting, the file and the problem."""


def read_json_object(path: Path, setting: str, holding: str) -> dict[str, Any]:
    """The JSON object in ``path`` (``holding``: what it should map, for the error message)."""
    try:
        loaded = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SettingsFileError(f"{setting} {path}: {exc}") from None
    if not isinstance(loaded, dict):
        raise SettingsFileError(f"{setting} {path}: must be a JSON object of {holding}")
    return loaded
