"""What the CLI's commands that talk to a running tubeflow share: the API's address and token, and its errors said
one per line."""

from __future__ import annotations

import argparse
import os
import sys

import httpx


def api_base(args: argparse.Namespace) -> str:
    return (getattr(args, "api", None) or os.environ.get("TUBEFLOW_API") or "http://127.0.0.1:8000").rstrip("/")


def api_headers() -> dict[str, str]:
    token = os.environ.get("TUBEFLOW_API_TOKEN")
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
