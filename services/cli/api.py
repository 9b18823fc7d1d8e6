"""What the CLI's commands that talk to a running tubeflow share: the API's address and token, and its errors said
one per line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

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


def answer_of(args: argparse.Namespace, answer: httpx.Response | None, failed: int | None, expected: int = 200) -> Any:
    """What a command does with ``call``'s answer: the exit code when the API did not answer or refused (its errors
    said); with ``--json``, the answer printed on one line and 0; else the answer's JSON for the command to say."""
    if answer is None:
        return failed
    if answer.status_code != expected:
        return print_errors(answer)
    found = answer.json()
    if getattr(args, "json", False):
        print(json.dumps(found))
        return 0
    return found


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
