"""What the CLI's commands that talk to a running tubeflow share: the API's address and token, and its errors said
one per line."""

from __future__ import annotations

import argparse
import os
import sys

import httpx


def api_base(args: argparse.Namespace) -> str:
    return (getattr(args, "api", None) or os.environ.get("TUBEFLOW_API") or "http://127.0.0.1:8000").rstrip("/")


def api_headers(args: argparse.Namespace | None = None) -> dict[str, str]:
    """The bearer token: ``--token``, else TUBEFLOW_TOKEN (a personal token), else TUBEFLOW_API_TOKEN."""
    token = getattr(args, "token", None) or os.environ.get("TUBEFLOW_TOKEN") or os.environ.get("TUBEFLOW_API_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def print_errors(answer: httpx.Response) -> int:
    """The API's errors on stderr, one per field; the exit code (2: the request was refused as invalid)."""
    try:
        errors = answer.json().get("errors") or [{"field": "", "message": answer.json().get("detail")}]
    except ValueError:
        errors = [{"field": "", "message": answer.text[:300]}]
    for error in errors:
        print(f"error: {error.get('field')}: {error.get('message')}".replace("error: : ", "error: "), file=sys.stderr)
    return 2 if answer.status_code == 422 else 1


def call(
    args: argparse.Namespace,
    method: str,
    path: str,
    body: dict | None = None,
    timeout: float = 30.0,
    params: dict | None = None,
) -> tuple:
    """(the answer, None), or (None, the exit code) when the API did not answer (said on stderr)."""
    base = api_base(args)
    try:
        headers = api_headers(args)
        answer = httpx.request(method, f"{base}{path}", json=body, params=params, headers=headers, timeout=timeout)
        return answer, None
    except httpx.HTTPError as exc:
        print(f"error: tubeflow at {base} did not answer: {exc}", file=sys.stderr)
        return None, 1
