"""Validation errors with stable codes: a validator raises ``refuse(code, message)``; the API finds the code of a
message again with ``code_of`` (Litestar passes on pydantic's message, not its error type)."""

from __future__ import annotations

from pydantic_core import PydanticCustomError

CODES: dict[str, str] = {}


def refuse(code: str, message: str) -> PydanticCustomError:
    CODES[message] = code
    return PydanticCustomError(code, message)


def code_of(message: str) -> str | None:
    for known, code in CODES.items():
        if message.endswith(known):
            return code
    return None
