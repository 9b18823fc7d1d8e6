"""Bounds on text strangers control."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator

# Text that strangers control (titles from a page, messages quoting a server) is cut to a bound, with a marker, when
# an event is made or read: no view grows with it. The fold never needs the full text.
TITLE_MAX = 300
MESSAGE_MAX = 1000
SHORT_MAX = 200  # codes, worker names, reasons
TRUNCATED = "…"


def _cut(limit: int) -> BeforeValidator:
    def cut(value: Any) -> Any:
        if isinstance(value, str) and len(value) > limit:
            return value[: limit - len(TRUNCATED)] + TRUNCATED
        return value

    return BeforeValidator(cut)


Title = Annotated[str, _cut(TITLE_MAX)]
Message = Annotated[str, _cut(MESSAGE_MAX)]
Short = Annotated[str, _cut(SHORT_MAX)]
