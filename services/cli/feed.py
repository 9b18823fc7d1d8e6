"""`tubeflow feed SUBSCRIPTION_ID | --folder NAME | --preset NAME [--new | --revoke]`: a podcast feed's URL (made when
there is none), a new one (the old stops working), or none (revoked), through a running tubeflow's API. A
subscription's feed lists its jobs; a folder's, the files that land under it; a preset's, the jobs made with it."""

from __future__ import annotations

import argparse

from services.cli.api import answer_of, call


def add_feed_parser(sub: argparse._SubParsersAction) -> None:
    feed = sub.add_parser(
        "feed",
        help="a podcast feed URL (for a podcast app) of a subscription, a folder or a preset: show, make, revoke",
    )
    feed.add_argument("subscription", nargs="?", help="the subscription's id")
    feed.add_argument("--folder", help="a folder under the media root (e.g. Podcasts, Shows/My show)")
    feed.add_argument("--preset", help="a preset's name")
    which = feed.add_mutually_exclusive_group()
    which.add_argument("--new", action="store_true", help="a new URL: the one given out before stops working")
    which.add_argument("--revoke", action="store_true", help="no feed any more: its URL stops working")
    feed.add_argument("--api", default=None, help="tubeflow API base URL (default http://127.0.0.1:8000)")
    feed.add_argument("--token", default=None, help="bearer token (default: TUBEFLOW_TOKEN, else TUBEFLOW_API_TOKEN)")
    feed.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    feed.set_defaults(func=run_feed)


def run_feed(args: argparse.Namespace) -> int:
    given = [name for name in (args.subscription, args.folder, args.preset) if name is not None]
    if len(given) != 1:
        print("tubeflow feed: give one of SUBSCRIPTION_ID, --folder NAME or --preset NAME")
        return 2
    if args.subscription is None:
        target = {"folder": args.folder} if args.folder is not None else {"preset": args.preset}
        if args.revoke:
            answer, failed = call(args, "DELETE", "/api/feeds", params=target)
        else:
            answer, failed = call(args, "POST", "/api/feeds", {**target, "new": args.new})
    else:
        path = f"/api/subscriptions/{args.subscription}/feed"
        if args.revoke:
            answer, failed = call(args, "DELETE", path)
        elif args.new:
            answer, failed = call(args, "POST", path)
        else:
            answer, failed = call(args, "GET", path)
            if answer is not None and answer.status_code == 200 and answer.json().get("url") is None:
                answer, failed = call(args, "POST", path)
    found = answer_of(args, answer, failed)
    if isinstance(found, int):
        return found
    print(found["url"] or "no feed (revoked)")
    return 0
