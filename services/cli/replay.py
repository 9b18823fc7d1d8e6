"""`tubeflow replay`: a job's events as a timeline, or the view the fold makes of them, from the API or NATS."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.request


def _summary(event) -> str:  # noqa: ANN001 - an Envelope
    data = event.data
    t = event.type
    if t == "requested":
        return f"{data.url} mode={data.mode}" + (f" audio={data.audio_format}" if data.mode != "video" else "")
    if t == "resolved":
        return f"{data.kind} {data.item_count} item(s) {data.title or ''}".rstrip()
    if t == "item.queued":
        return f"#{data.index} {data.title or data.url}"
    if t == "download.progress":
        pct = f"{100 * data.downloaded_bytes / data.total_bytes:.1f}%" if data.total_bytes else "?%"
        speed = f" {data.speed / 1024:.0f} KiB/s" if data.speed else ""
        return f"{pct} {data.downloaded_bytes}/{data.total_bytes or '?'} B{speed}"
    if t in ("download.completed", "extract.completed"):
        return f"{data.file} ({data.size} B)"
    if t in ("download.failed", "extract.failed", "resolve.failed"):
        return f"{data.code}: {data.message}"
    if t == "extract.progress":
        return f"{data.percent:.1f}%"
    if t == "download.started":
        return f"attempt {data.attempt} on {data.worker}"
    if t in ("extract.started",):
        return f"{data.audio_format} on {data.worker}"
    return getattr(data, "worker", "")


async def _events_from_nats(url: str, job_id: str, until: int | None):
    from services.runtime.nats import connect, read_job_events
    from services.runtime.settings import Settings

    settings = Settings()
    nc = await connect(url, "tubeflow-replay", auth=settings.nats_auth(), timeout=settings.nats_connect_timeout)
    try:
        stored = await read_job_events(nc.jetstream(), job_id, until=until)
    finally:
        await nc.close()
    return [(s.seq, s.event, s.error) for s in stored]


def _events_from_api(base: str, job_id: str, until: int | None, headers: dict[str, str] | None = None):
    from contracts.events import CURRENT_VERSION, InvalidEvent, parse_event

    out = []
    after = 0
    while True:
        url = f"{base.rstrip('/')}/api/jobs/{job_id}/events?after={after}&limit=1000"
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as response:
            records = json.load(response)
        if not records:
            return out
        for record in records:
            if until is not None and record["seq"] > until:
                return out
            after = record["seq"]
            if record["type"] == "invalid":
                out.append((record["seq"], None, record["data"].get("reason")))
                continue
            raw = {
                "event_id": f"seq-{record['seq']}",
                "type": record["type"],
                "version": CURRENT_VERSION.get(record["type"], 1),
                "job_id": job_id,
                "item_id": record["item_id"],
                "occurred_at": record["occurred_at"],
                "data": record["data"],
            }
            try:
                out.append((record["seq"], parse_event(raw, seq=record["seq"]), None))
            except InvalidEvent as exc:
                out.append((record["seq"], None, str(exc)))


def cmd_replay(args: argparse.Namespace) -> int:
    from contracts.fold import apply_or_set_aside

    try:
        if args.api:
            from services.cli.api import api_headers

            events = _events_from_api(args.api, args.job_id, args.until_seq, api_headers(args))
        else:
            events = asyncio.run(_events_from_nats(args.nats, args.job_id, args.until_seq))
    except urllib.error.HTTPError as exc:
        print(f"error: {args.api} answered {exc.code} for job {args.job_id}", file=sys.stderr)
        return 1
    except (OSError, urllib.error.URLError) as exc:
        print(f"error: cannot read events: {exc}", file=sys.stderr)
        return 1
    if not events:
        print(f"error: no events for job {args.job_id}", file=sys.stderr)
        return 1
    view = None
    for seq, event, error in events:
        if event is None:
            if not args.json:
                print(f"{seq:>8}  {'-':<26}  {'invalid':<18}  {'':<6}  {error}")
            continue
        view, set_aside = apply_or_set_aside(view, event)
        if set_aside is not None and not args.json:
            print(f"{seq:>8}  {'-':<26}  {event.type:<18}  {event.item_id or '-':<6}  set aside: {set_aside}")
            continue
        if not args.json:
            when = event.occurred_at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            print(f"{seq:>8}  {when:<26}  {event.type:<18}  {event.item_id or '-':<6}  {_summary(event)}")
    if args.json:
        print(view.model_dump_json() if view is not None else "null")
    elif view is not None:
        print(f"-> {view.status} {view.progress.percent:.1f}% at seq {view.seq}")
    return 0
