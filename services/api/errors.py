"""Every 4xx the API answers has one shape: {"status_code", "detail", "errors": [{"field", "code", "message"}]}."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import ResponseSpec
from pydantic import BaseModel

from services.api.requests import error_code
from services.runtime.nats.connection import NATS_AWAY

log = logging.getLogger("tubeflow.api")


class FieldError(BaseModel):
    field: str
    code: str
    message: str


class ErrorBody(BaseModel):
    """Every 4xx answer: what went wrong, and per field the stable code and the message."""

    status_code: int
    detail: str
    errors: list[FieldError] = []


_MEANING = {
    400: "malformed request (e.g. JSON that does not parse)",
    401: "who is asking is not known: a bearer token, a session or a proxy's user is required (TUBEFLOW_AUTH)",
    403: "not allowed from here (e.g. updating yt-dlp without a token, from another machine)",
    404: "no such job or file (or someone else's, which is answered alike; or a route off in this auth mode)",
    409: "the job (or the engine) is not in a state that allows this",
    413: "request body too large (64 KiB; a cookie profile 1 MiB)",
    415: "the body's Content-Type is not one this route takes",
    416: "requested range not satisfiable",
    422: "a field is invalid; `errors` names it",
    429: "too many job creations or open streams; see Retry-After",
    502: "the sign-in provider (TUBEFLOW_OIDC_ISSUER) did not answer as it should",
    503: "NATS is not answering for a moment (a node lost, a leader being elected); see Retry-After",
}


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """The OpenAPI description of the error answers a route gives."""
    return {code: ResponseSpec(data_container=ErrorBody, description=_MEANING[code]) for code in codes}


class ApiError(HTTPException):
    """A 4xx whose body names the field and the problem: {"status_code", "detail", "errors": [...]}."""

    def __init__(self, status_code: int, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail=detail, status_code=status_code, extra={"errors": errors or []})


def field_error(status_code: int, field: str, code: str, message: str, detail: str | None = None) -> ApiError:
    return ApiError(status_code, detail or f"{field}: {message}", [{"field": field, "code": code, "message": message}])


def validation_error(request: Request, exc: ValidationException) -> Response:
    errors = []
    for problem in exc.extra if isinstance(exc.extra, list) else []:
        message = str(problem.get("message", "invalid")).removeprefix("Value error, ")
        field = problem.get("key") or "body"
        errors.append({"field": field, "code": error_code(message), "message": message})
    if not errors:
        errors.append({"field": "body", "code": "invalid", "message": str(exc.detail)})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return Response({"status_code": 422, "detail": detail, "errors": errors}, status_code=422)


def api_error(request: Request, exc: HTTPException) -> Response:
    extra = exc.extra if isinstance(exc.extra, dict) else {}
    return Response(
        {"status_code": exc.status_code, "detail": exc.detail, "errors": extra.get("errors", [])},
        status_code=exc.status_code,
        headers=exc.headers,
        media_type="application/json",
    )


def internal_error(request: Request, exc: Exception) -> Response:
    """A bug, not a bad request: logged with its traceback (the app logs nothing by itself), the body in our shape.
    NATS being away for a moment is not a bug: 503, Retry-After 1, code `nats_unavailable`."""
    if isinstance(exc, NATS_AWAY):
        log.warning("%s %s: NATS did not answer (%s): 503", request.method, request.url.path, type(exc).__name__)
        return Response(
            {
                "status_code": 503,
                "detail": "the event store is not answering right now; try again",
                "errors": [{"field": "nats", "code": "nats_unavailable", "message": str(exc) or type(exc).__name__}],
            },
            status_code=503,
            headers={"Retry-After": "1"},
            media_type="application/json",
        )
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return Response(
        {"status_code": 500, "detail": "Internal Server Error", "errors": []},
        status_code=500,
        media_type="application/json",
    )


EXCEPTION_HANDLERS = {ValidationException: validation_error, HTTPException: api_error, Exception: internal_error}
