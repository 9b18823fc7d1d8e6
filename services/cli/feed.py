"""`tubeflow feed SUBSCRIPTION_ID [--new | --revoke]`: a subscription's podcast feed URL (made when it has none), a
new one (the old stops working), or none (revoked), through a running tubeflow's API."""

from __future__ import annotations

import argparse
import json

from services.cli.api import call, print_errors


def add_feed_parser(sub: argparse._SubParsersAction) -> None:
    feed = sub.add_parser("feed", help="a subscription's podcast feed URL (for a podcast app): show, make, revoke")
    feed.add_argument("subscription", help="the subscription's id")
    which = feed.add_mutually_exclusive_group()
    which.add_argument("--new", action="store_true", help="a new URL: the one given out before stops working")
    which.add_argument("--revoke", action="store_true", help="no feed any more: its URL stops working")
    feed.add_argument("--api", default=None, help="tubeflow API base URL (default http://127.0.0.1:8000)")
    feed.add_argument("--token", default=None, help="bearer token (default: TUBEFLOW_TOKEN, else TUBEFLOW_API_TOKEN)")
    feed.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    feed.set_defaults(func=run_feed)


def run_feed(args: argparse.Namespace) -> int:
    path = f"/api/subscriptions/{args.subscription}/feed"
    if args.revoke:
        answer, failed = call(args, "DELETE", path)
    elif args.new:
        answer, failed = call(args, "POST", path)
    else:
        answer, failed = call(args, "GET", path)
        if answer is not None and answer.status_code == 200 and answer.json().get("url") is None:
            answer, failed = call(args, "POST", path)
    if answer is None:
        return failed
    if answer.status_code != 200:
        return print_errors(answer)
    found = answer.json()
    if args.json:
        print(json.dumps(found))
    else:
        print(found["url"] or "no feed (revoked)")
    return 0
