"""`tubeflow subscribe URL --every 1h`: follow a channel, playlist or feed through a running tubeflow's API; each
check makes a job of every new entry (the job flags are `tubeflow get`'s)."""

from __future__ import annotations

import argparse

from services.cli.api import answer_of, api_base, call
from services.cli.get_options import job_body


def add_subscribe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--every",
        default="1h",
        help='how often to check: "30m", "1h", "1d" (at least the server\'s TUBEFLOW_SUBSCRIPTION_MIN_INTERVAL, '
        "5 min unless its operator changed it; at most 366 days)",
    )
    parser.add_argument("--include", action="append", metavar="PATTERN", help="only titles with this (glob or text)")
    parser.add_argument("--exclude", action="append", metavar="PATTERN", help="no titles with this (glob or text)")
    parser.add_argument("--since", metavar="YYYY-MM-DD", help="leave out entries published before this day")
    parser.add_argument("--max-items", type=int, metavar="N", help="jobs one check makes at most (default 50)")
    parser.add_argument("--name", help="what to call it on the page")
    parser.add_argument("--paused", action="store_true", help="create it paused")


def subscription_body(args: argparse.Namespace) -> dict:
    options = job_body(args)
    body: dict = {"url": options.pop("url"), "interval": args.every}
    options.pop("playlist_items", None)
    options.pop("skip_downloaded", None)  # always on for a subscription's jobs
    if options.get("preset"):
        body["preset"] = options.pop("preset")
    if options:
        body["options"] = options
    if args.include or args.exclude:
        body["title_filter"] = {"include": args.include or [], "exclude": args.exclude or []}
    for name, value in (("since", args.since), ("max_items_per_check", args.max_items), ("name", args.name)):
        if value is not None:
            body[name] = value
    if args.paused:
        body["start"] = False
    return body


def run_subscribe(args: argparse.Namespace) -> int:
    answer, failed = call(args, "POST", "/api/subscriptions", subscription_body(args))
    view = answer_of(args, answer, failed, expected=201)
    if isinstance(view, int):
        return view
    state = "paused" if view["paused"] else f"checking every {view['interval']:g} s, first check now"
    print(f"subscribed: {view['id']} ({state})\n  {api_base(args)}/api/subscriptions/{view['id']}")
    return 0
