"""`tubeflow get URL`: submit a job to a tubeflow API and follow it over SSE with progress bars in the terminal."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import EventSource
from rich.console import Console
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from contracts.items import postprocess_label
from services.cli.api import api_headers
from services.cli.get_options import job_body

TERMINAL = {"completed", "partial", "failed", "cancelled"}


@dataclass
class JobState:
    """The job as the stream tells it: the summary of `job` messages plus the `item` messages."""

    job: dict[str, Any] = field(default_factory=dict)
    items: dict[str, dict[str, Any]] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        return {**self.job, "items": sorted(self.items.values(), key=lambda i: i["index"])}


def phase_of(item: dict[str, Any]) -> str:
    """What an item is doing now, in words: "video 1/2", "merging video and audio", "extracting audio", …"""
    dl, pp = item["download"], item.get("postprocess") or {}
    if item["status"] == "queued" and item.get("waiting"):
        until = item["waiting"].get("until")
        at = f" until {datetime.fromisoformat(until).astimezone():%H:%M:%S}" if until else ""
        return f"waiting: {item['waiting']['code']}{at}"
    if item["status"] == "processing":
        label = pp.get("label") or postprocess_label(pp.get("name"))
        return f"{label} · {int(pp['percent'])} %" if pp.get("percent") is not None else label
    if item["status"] in ("recording", "stopping"):
        recorded = dl.get("recorded_seconds") or 0
        return f"{'recording live' if item['status'] == 'recording' else 'stopping'} {recorded:.0f} s"
    if dl["status"] == "running" and dl.get("stream_count"):
        return f"{dl.get('stream_kind') or 'stream'} {dl['stream_index']}/{dl['stream_count']}"
    if item["status"] == "extracting":
        return "extracting audio"
    return ""


class Bars:
    def __init__(self, console: Console) -> None:
        self.overall = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"), console=console
        )
        self.items = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.audio = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"), console=console
        )
        self._overall: TaskID = self.overall.add_task("job", total=100)
        self._item_tasks: dict[str, TaskID] = {}
        self._audio_tasks: dict[str, TaskID] = {}
        self._live: set[str] = set()  # items recording a live stream
        self.summary = ""

    def table(self) -> Table:
        grid = Table.grid()
        grid.add_row(self.overall)
        grid.add_row(self.summary)
        grid.add_row(self.items)
        grid.add_row(self.audio)
        return grid

    def update(self, state: JobState) -> None:
        job = state.job
        if job:
            self.overall.update(
                self._overall,
                completed=job["progress"]["percent"],
                description=f"{(job.get('title') or job['url'])[:40]} [{job['status']}]",
            )
            d, x = job["download"], job["extract"]
            line = f"downloads {d['completed']} / {d['total']} done"
            if job.get("kind") == "playlist":
                line += f" ({d['remaining']} remaining)"
            if d["failed"]:
                line += f", {d['failed']} failed"
            if job["mode"] != "video":
                line += f" · audio {x['completed']} / {x['total']}"
            self.summary = line
        for item in state.items.values():
            key, dl, ex = item["id"], item["download"], item["extract"]
            label = f"#{item['index']} {(item.get('title') or '')[:28]}"
            if dl["status"] == "running" or (dl["status"] == "completed" and key in self._item_tasks):
                task = self._item_tasks.get(key)
                done, percent = dl["downloaded_bytes"], dl["percent"]  # percent None: a live recording
                # The bar follows the item's percent (never backwards), not bytes over a total that is an estimate.
                if percent is None:
                    total = None  # a live recording has no end: rich shows a bar that pulses
                    if task is not None and key not in self._live:
                        # rich's update keeps a total it has; a bar made before the recording began is made anew.
                        self.items.remove_task(task)
                        task = None
                    self._live.add(key)
                else:
                    total = done * 100 / percent if percent else (dl.get("total_bytes") or done or 1)
                if task is None:
                    task = self._item_tasks[key] = self.items.add_task(label, total=total)
                now = phase_of(item)
                self.items.update(
                    task,
                    completed=done,
                    total=total,
                    description=f"{label} {now}".rstrip(),
                    visible=dl["status"] == "running",
                )
            if ex["status"] == "running":
                task = self._audio_tasks.get(key)
                if task is None:
                    task = self._audio_tasks[key] = self.audio.add_task(f"audio {label}", total=100)
                self.audio.update(task, completed=ex["percent"], visible=True)
            elif key in self._audio_tasks:
                self.audio.update(self._audio_tasks[key], visible=False)


async def follow_job(client: httpx.AsyncClient, base: str, job_id: str, on_change) -> JobState:  # noqa: ANN001
    """Follow the job's stream until its terminal state; reconnect with Last-Event-ID when the connection drops."""
    state = JobState()
    last_id: str | None = None
    retry = 1.0  # seconds before reconnecting; the server's `retry:` field overrides it
    while True:
        headers = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
        try:
            async with client.stream(
                "GET", f"{base}/api/jobs/{job_id}/stream", headers=headers, timeout=httpx.Timeout(10, read=120)
            ) as response:
                response.raise_for_status()
                async for message in EventSource(response).aiter_sse():
                    if message.retry is not None:
                        retry = message.retry / 1000
                    if not message.data:
                        continue  # not an event (EventSource dispatches none without data), e.g. only `retry:`
                    if message.id:
                        last_id = message.id
                    if message.event == "item":
                        item = message.json()
                        state.items[item["id"]] = item
                    elif message.event == "job":
                        state.job = message.json()
                    on_change(state, message.event)
                    if state.job.get("status") in TERMINAL and message.event == "job":
                        return state
        except (httpx.TransportError, httpx.HTTPStatusError):
            await asyncio.sleep(retry)


async def _get(args, console: Console) -> int:  # noqa: ANN001
    base = (args.api or "http://127.0.0.1:8000").rstrip("/")
    headers = api_headers(args)
    body = job_body(args)
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        try:
            response = await client.post(f"{base}/api/jobs", json=body)
        except httpx.TransportError:
            console.print(
                f"[red]Nothing answers at {base}.[/red] Start tubeflow with [bold]uv run tubeflow up[/bold] "
                "(or pass --api URL)."
            )
            return 1
        if response.status_code != 202:
            answer = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
            for error in answer.get("errors", []) or [
                {"field": "-", "code": str(response.status_code), "message": answer.get("detail") or response.text}
            ]:
                console.print(f"[red]{error['field']}: {error['message']} ({error['code']})[/red]")
            return 1
        job_id = response.json()["id"]
        args._job_id = job_id
        if args.json:

            def emit(state: JobState, event: str) -> None:
                if event == "job":
                    sys.stdout.write(json.dumps(state.view()) + "\n")
                    sys.stdout.flush()

            state = await follow_job(client, base, job_id, emit)
        else:
            console.print(f"job {job_id}")
            bars = Bars(console)
            with Live(bars.table(), console=console, refresh_per_second=8, transient=False) as live:

                def redraw(state: JobState, event: str) -> None:
                    bars.update(state)
                    live.update(bars.table())

                state = await follow_job(client, base, job_id, redraw)
    view = state.view()
    if not args.json:
        _print_result(console, base, view)
    return 0 if view["status"] == "completed" else 1


def _print_result(console: Console, base: str, view: dict[str, Any]) -> None:
    status = view["status"]
    colour = "green" if status == "completed" else "red"
    console.print(f"[{colour}]{status}[/{colour}] {view.get('title') or view['url']}")
    if view.get("error"):
        console.print(f"[red]{view['error']['code']}: {view['error']['message']}[/red]")
        if view["error"].get("hint"):
            console.print(f"  {view['error']['hint']}")
    for item in view["items"]:
        if item.get("error"):
            console.print(f"  [red]#{item['index']} {item['error']['code']}: {item['error']['message']}[/red]")
            if item["error"].get("hint"):
                console.print(f"  {item['error']['hint']}")
        chosen = item["download"].get("chosen") or {}
        if chosen.get("height") or chosen.get("vcodec"):
            codecs = " + ".join(c.split(".")[0] for c in (chosen.get("vcodec"), chosen.get("acodec")) if c)
            console.print(f"  #{item['index']} {chosen.get('height') or '?'}p {codecs} {chosen.get('ext') or ''}")
        files = [item["download"].get("file"), *(item["download"].get("files") or []), item["extract"].get("file")]
        for file in filter(None, files):
            console.print(f"  {base}/media/{quote(file)}")


def run_get(args) -> int:  # noqa: ANN001
    # soft_wrap: URLs and commands stay on one line, so they can be copied.
    console = Console(stderr=args.json, soft_wrap=True)
    loop = asyncio.new_event_loop()
    task = loop.create_task(_get(args, console))
    try:
        return loop.run_until_complete(task)
    except KeyboardInterrupt:
        task.cancel()
        try:
            loop.run_until_complete(task)
        except (asyncio.CancelledError, Exception):
            pass
        return _offer_cancel(args, console)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _offer_cancel(args, console: Console) -> int:  # noqa: ANN001
    """Ctrl-C: offer to cancel the job on the server (it keeps running otherwise); exit 130 either way."""
    job_id = getattr(args, "_job_id", None)
    if job_id and sys.stdin.isatty():
        answer = console.input("\nCancel the job on the server too? [y/N] ").strip().lower()
        if answer == "y":
            base = (args.api or "http://127.0.0.1:8000").rstrip("/")
            response = httpx.post(f"{base}/api/jobs/{job_id}/cancel", headers=api_headers(args), timeout=10)
            console.print(f"cancel: HTTP {response.status_code}")
    elif job_id:
        console.print(f"\nstopped following; job {job_id} keeps running on the server")
    return 130
