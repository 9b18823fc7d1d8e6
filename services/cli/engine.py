"""`tubeflow engine [update [--version V] | rollback]`: the yt-dlp a running tubeflow uses, updated or rolled back at
run time through its API (which installs and checks it; see services/engine/updates.py)."""

from __future__ import annotations

import argparse

from services.cli.api import answer_of, call

# An install and its self-test may take a while on a slow index.
TIMEOUT = 600.0


def add_engine_parser(sub: argparse._SubParsersAction) -> None:
    engine = sub.add_parser("engine", help="the yt-dlp a running tubeflow uses: show, update (at run time), roll back")
    engine.add_argument("action", nargs="?", choices=("show", "update", "rollback"), default="show")
    engine.add_argument("--version", default=None, help="update: this version (default: the newest on the index)")
    engine.add_argument("--api", default=None, help="tubeflow API base URL (default http://127.0.0.1:8000)")
    engine.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    engine.add_argument("--token", default=None, help="bearer token (default: TUBEFLOW_TOKEN, else TUBEFLOW_API_TOKEN)")
    engine.set_defaults(func=run_engine)


def run_engine(args: argparse.Namespace) -> int:
    if args.action == "show":
        answer, failed = call(args, "GET", "/api/engine")
    else:
        body = {"version": args.version} if args.action == "update" and args.version else None
        answer, failed = call(args, "POST", f"/api/engine/{args.action}", body, TIMEOUT)
    found = answer_of(args, answer, failed)
    if isinstance(found, int):
        return found
    if args.action == "show":
        print(f"yt-dlp in force: {found['in_force']} (bundled {found['bundled']})")
        if found.get("previous"):
            print(f"  rollback goes to {found['previous']}")
        for process in found["processes"]:
            print(f"  {process['worker']}: {process['engine'] or '?'}")
        if found.get("last_failure"):
            failure = found["last_failure"]
            print(f"  last failed update ({failure.get('version') or 'newest'}): {failure['reason'][:300]}")
    else:
        was = f" (was {found['previous']})" if found.get("previous") else ""
        print(f"yt-dlp {found['version']} in force{was}: new downloads run on it, running ones finish on theirs")
    return 0
