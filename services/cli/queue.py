"""`tubeflow queue [show | pause [--now] | resume | schedule [show | set … | clear]]`: the download queue of a running
tubeflow, and its download schedule (windows, the bandwidth budget, daily caps; issue 29), through its API."""

from __future__ import annotations

import argparse
import json
import re
import sys

from contracts.schedule import DAYS, human_bytes
from services.cli.api import answer_of, call, print_errors

_WINDOW = re.compile(r"(?:(?P<days>[a-z,\-]+)\s+)?(?P<from>\d\d:\d\d(?::\d\d)?)-(?P<to>\d\d:\d\d(?::\d\d)?)")


def add_queue_parser(sub: argparse._SubParsersAction) -> None:
    queue = sub.add_parser(
        "queue",
        help="the download queue: show, pause, resume, and its download schedule (queue schedule [show|set|clear])",
    )
    queue.add_argument("action", nargs="?", choices=("show", "pause", "resume", "schedule"), default="show")
    queue.add_argument(
        "schedule_action", nargs="?", choices=("show", "set", "clear"), default="show", metavar="show|set|clear"
    )
    queue.add_argument("--now", action="store_true", help="pause: also stop the running downloads (they resume later)")
    queue.add_argument(
        "--window",
        action="append",
        default=None,
        metavar="[DAYS ]FROM-TO",
        help='schedule set: a download window, e.g. "01:00-07:00", "mon-fri 22:00-06:00", "sat,sun 08:00-12:00" '
        "(repeat for several; replaces the windows)",
    )
    queue.add_argument("--no-windows", action="store_true", help="schedule set: no windows (downloads run any time)")
    queue.add_argument("--timezone", default=None, help="schedule set: the windows' time zone, e.g. Europe/Berlin")
    queue.add_argument("--outside", choices=("wait", "slow"), default=None, help="schedule set: outside the windows")
    queue.add_argument("--slow-rate", default=None, help="schedule set: the budget outside windows, e.g. 200K")
    queue.add_argument("--rate", default=None, help="schedule set: bytes a second for all downloads, e.g. 5M")
    queue.add_argument("--daily-cap", default=None, help="schedule set: bytes a day over all sites, e.g. 20G")
    queue.add_argument(
        "--site-cap", action="append", default=None, metavar="SITE=SIZE", help="schedule set: a site's bytes a day"
    )
    queue.add_argument("--at-window-end", choices=("pause", "finish"), default=None, help="schedule set: running ones")
    queue.add_argument("--file", default=None, help="schedule set: the whole schedule from a JSON file")
    queue.add_argument("--api", default=None, help="tubeflow API base URL (default http://127.0.0.1:8000)")
    queue.add_argument("--token", default=None, help="bearer token (default: TUBEFLOW_TOKEN, else TUBEFLOW_API_TOKEN)")
    queue.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    queue.set_defaults(func=run_queue)


def run_queue(args: argparse.Namespace) -> int:
    action = args.action
    if action == "schedule":
        return run_schedule(args)
    if action == "show":
        answer, failed = call(args, "GET", "/api/queue")
    else:
        query = "?now=true" if action == "pause" and args.now else ""
        answer, failed = call(args, "POST", f"/api/queue/{action}{query}")
    state = answer_of(args, answer, failed)
    if isinstance(state, int):
        return state
    paused = "paused" + (" (running downloads stopped)" if state.get("now") else "") if state["paused"] else "running"
    waiting = ", ".join(f"{w['priority']} {w['waiting']}" for w in state["items"] if w["waiting"])
    running = sum(len(w["running"]) for w in state["workers"])
    print(f"queue {paused}: {running} downloading, waiting: {waiting or 'none'}")
    _say_status(state.get("schedule"))
    return 0


def run_schedule(args: argparse.Namespace) -> int:
    if args.schedule_action == "show":
        answer, failed = call(args, "GET", "/api/queue/schedule")
    elif args.schedule_action == "clear":
        answer, failed = call(args, "DELETE", "/api/queue/schedule")
    else:
        body = _wanted(args)
        if body is None:
            return 2
        answer, failed = call(args, "PUT", "/api/queue/schedule", body)
    schedule = answer_of(args, answer, failed)
    if isinstance(schedule, int):
        return schedule
    print(describe(schedule))
    state, failed = call(args, "GET", "/api/queue")
    if state is not None and state.status_code == 200:
        _say_status(state.json().get("schedule"))
    return 0


def _wanted(args: argparse.Namespace) -> dict | None:
    """The schedule to PUT: the file's, or the one in force with what the options change."""
    if args.file:
        try:
            with open(args.file, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError) as exc:
            print(f"error: --file {args.file}: {exc}", file=sys.stderr)
            return None
    current, failed = call(args, "GET", "/api/queue/schedule")
    if current is None or current.status_code != 200:
        if current is not None:
            print_errors(current)
        return None
    body = current.json()
    if args.no_windows:
        body["windows"] = []
    if args.window:
        windows = []
        for text in args.window:
            window = parse_window(text)
            if window is None:
                print(
                    f'error: --window {text!r}: not "[DAYS ]HH:MM-HH:MM" (e.g. "mon-fri 22:00-06:00")', file=sys.stderr
                )
                return None
            windows.append(window)
        body["windows"] = windows
    for option, name in (
        ("timezone", "timezone"),
        ("outside", "outside"),
        ("slow_rate", "slow_rate"),
        ("rate", "rate"),
        ("daily_cap", "daily_cap"),
        ("at_window_end", "running_at_window_end"),
    ):
        value = getattr(args, option)
        if value is not None:
            body[name] = None if value in ("", "none") and name not in ("timezone", "outside") else value
    if args.site_cap:
        caps = dict(body.get("site_caps") or {})
        for text in args.site_cap:
            site, _, size = text.partition("=")
            if not site or not size:
                print(f"error: --site-cap {text!r}: not SITE=SIZE (e.g. youtube.com=10G)", file=sys.stderr)
                return None
            if size in ("none", "0"):
                caps.pop(site, None)
            else:
                caps[site] = size
        body["site_caps"] = caps
    return body


def parse_window(text: str) -> dict | None:
    """ "mon-fri 22:00-06:00" -> {"days": [...], "from": "22:00", "to": "06:00"} (no days: every day)."""
    m = _WINDOW.fullmatch(text.strip().lower())
    if m is None:
        return None
    window: dict = {"from": m.group("from"), "to": m.group("to")}
    if m.group("days") and m.group("days") not in ("daily", "all"):
        days: list[str] = []
        for part in m.group("days").split(","):
            first, _, last = part.partition("-")
            if first not in DAYS or (last and last not in DAYS):
                return None
            if not last:
                days.append(first)
                continue
            i, j = DAYS.index(first), DAYS.index(last)
            days += [DAYS[(i + n) % 7] for n in range((j - i) % 7 + 1)]
        window["days"] = list(dict.fromkeys(days))
    return window


def describe(schedule: dict) -> str:
    lines = []
    windows = schedule.get("windows") or []
    if windows:
        for w in windows:
            days = w.get("days") or list(DAYS)
            named = "every day" if len(days) == 7 else ",".join(days)
            lines.append(f"window: {named} {w['from']}-{w['to']} ({schedule['timezone']})")
        lines.append(
            "outside the windows: "
            + ("new downloads wait" if schedule["outside"] == "wait" else f"downloads run at {schedule['slow_rate']}/s")
            + f"; running ones {'pause' if schedule['running_at_window_end'] == 'pause' else 'finish'} at a window's end"
        )
    else:
        lines.append("windows: none (downloads may run at any time)")
    lines.append(f"budget: {schedule['rate'] + '/s for all downloads together' if schedule.get('rate') else 'none'}")
    caps = [f"{schedule['daily_cap']} in all"] if schedule.get("daily_cap") else []
    caps += [f"{size} from {site}" for site, size in (schedule.get("site_caps") or {}).items()]
    lines.append(f"daily caps: {', '.join(caps) if caps else 'none'}")
    return "\n".join(lines)


def _say_status(status: dict | None) -> None:
    if not status:
        return
    if status.get("message"):
        print(f"now: {status['message']}")
    today = f"today ({status['day']}): {human_bytes(status['bytes'])}"
    if status.get("cap"):
        today += f" of {human_bytes(status['cap'])}"
    sites = [f"{s['site']} {human_bytes(s['bytes'])} of {human_bytes(s['cap'])}" for s in status.get("sites") or []]
    print(today + (f"; {', '.join(sites)}" if sites else ""))
