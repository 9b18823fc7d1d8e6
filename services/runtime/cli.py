"""The `tubeflow` command: `up` (everything, with an embedded NATS), `service NAME` (one service), `replay`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Awaitable, Callable

from services.runtime.settings import Settings

log = logging.getLogger("tubeflow")

SERVICES = ("api", "downloader", "extractor", "progress")
# Services `tubeflow up` runs in a child process of its own rather than on its event loop.
UP_CHILDREN = ("downloader",)


def _setup_logging() -> None:
    import os

    from services.runtime.logs import setup_logging

    setup_logging(os.environ.get("TUBEFLOW_LOG_FORMAT", "text").lower())


async def _run_api(settings: Settings, stop: asyncio.Event, host: str, port: int) -> None:
    import uvicorn

    from services.api.app import create_app

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # type: ignore[override]
            # Signals belong to the tubeflow process, which stops every service together.
            yield

    config = uvicorn.Config(
        create_app(settings), host=host, port=port, log_level="warning", lifespan="on", timeout_graceful_shutdown=5
    )
    server = Server(config)

    async def serve_or_fail() -> None:
        try:
            await server.serve()
        except SystemExit as exc:  # uvicorn exits when it can't bind; here that is one failed service
            raise RuntimeError(f"the API could not start on {host}:{port}") from exc

    serve = asyncio.create_task(serve_or_fail())
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({serve, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if serve in done:
        stopper.cancel()
        serve.result()
        if not server.started:
            raise RuntimeError(f"the API could not start on {host}:{port}")
        return
    server.should_exit = True
    await serve


def _service(name: str, host: str, port: int) -> Callable[[Settings, asyncio.Event], Awaitable[None]]:
    if name == "api":
        return lambda settings, stop: _run_api(settings, stop, host, port)
    if name == "downloader":
        from services.downloader.app import run
    elif name == "extractor":
        from services.extractor.app import run
    elif name == "progress":
        from services.progress.projector import run
    else:
        raise ValueError(name)
    return run


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM when `tubeflow up` dies, even by SIGKILL, so no worker is left behind."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _child_service(name: str) -> Callable[[Settings, asyncio.Event], Awaitable[None]]:
    """Run `tubeflow service NAME` as a child process until ``stop``, then stop it with SIGTERM.

    `tubeflow up` runs the downloader this way: yt-dlp's download threads contend for the GIL, and in the same
    process they delayed the API's and projector's event loop (measured in docs/benchmarks.md).
    """

    async def run(settings: Settings, stop: asyncio.Event) -> None:
        import os

        env = {
            **os.environ,
            "TUBEFLOW_NATS_URL": settings.nats_url or "",
            "TUBEFLOW_DATA_DIR": str(settings.data_dir),
            "TUBEFLOW_DECLARE": "false",  # `up` declared the topology before starting its services
            "TUBEFLOW_HEALTH_PORT": "0",  # `up` answers health checks on the API's port
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.runtime.cli",
            "service",
            name,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            # Its own session: Ctrl-C reaches `up`, which stops the child in order (SIGTERM, grace period).
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        exited = asyncio.create_task(process.wait())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({exited, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not stop.is_set():
            raise RuntimeError(f"the {name} process exited with code {process.returncode}")
        if process.returncode is None:
            process.terminate()
        try:
            await asyncio.wait_for(exited, settings.shutdown_grace + 10.0)
        except asyncio.TimeoutError:
            process.kill()
            await exited

    return run


async def run_services(
    names: list[str], settings: Settings, host: str, port: int, on_ready=None, children: tuple[str, ...] = ()
) -> int:
    """Run services until SIGINT/SIGTERM, or until one of them fails (then stop the rest). Returns an exit code."""
    from services.runtime.eventstore import connect, prepare
    from services.runtime.tracing import setup_tracing

    setup_tracing(settings.tracing, names[0] if len(names) == 1 else "up")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    nc = await connect(settings.nats_url, "tubeflow-setup")  # type: ignore[arg-type]
    try:
        created = await prepare(nc.jetstream(), settings)
        if created:
            log.info("created %s", ", ".join(created))
    finally:
        await nc.close()
    tasks = {asyncio.create_task(_service(name, host, port)(settings, stop), name=name): name for name in names}
    for name in children:
        tasks[asyncio.create_task(_child_service(name)(settings, stop), name=name)] = name
    if on_ready is not None:
        on_ready()
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({*tasks, stopper}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    for task in done:
        if task is not stopper:
            code = 1
            exc = task.exception()
            log.error("service %s stopped: %s", tasks[task], exc or "without an error")
    stop.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for task, result in zip(tasks, results, strict=True):
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            if task not in done:
                log.error("service %s failed while stopping: %s", tasks[task], result)
    stopper.cancel()
    return code


def run_loop(main: Awaitable[int]) -> int:
    """Run a service's main coroutine on uvloop (libuv's event loop: less overhead per socket operation, measured in
    docs/benchmarks.md), or on asyncio's own loop where uvloop is not available."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.run(main)  # type: ignore[arg-type]
    return uvloop.run(main)  # type: ignore[arg-type]


def cmd_up(args: argparse.Namespace) -> int:
    from services.runtime.embedded import EmbeddedNats

    settings = Settings()
    data_dir = Path(args.data_dir) if args.data_dir else settings.data_dir
    settings = settings.model_copy(update={"data_dir": data_dir.resolve()})
    embedded = None
    if not settings.nats_url:
        embedded = EmbeddedNats(settings.nats_store_dir, log_file=settings.data_dir / "nats-server.log")
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        url = embedded.start()
        settings = settings.model_copy(update={"nats_url": url})
        log.info("embedded NATS with JetStream at %s, storing in %s", url, settings.nats_store_dir)

    def ready() -> None:
        print(f"tubeflow is up: http://{args.host}:{args.port}  (Ctrl-C stops it)", flush=True)

    try:
        in_process = [name for name in SERVICES if name not in UP_CHILDREN]
        return run_loop(run_services(in_process, settings, args.host, args.port, on_ready=ready, children=UP_CHILDREN))
    finally:
        if embedded is not None:
            embedded.stop()


def cmd_service(args: argparse.Namespace) -> int:
    settings = Settings()
    if not settings.nats_url:
        print("TUBEFLOW_NATS_URL is not set: `tubeflow service` connects to an existing NATS server", file=sys.stderr)
        return 2
    return run_loop(run_services([args.name], settings, args.host, args.port))


# --- replay ---------------------------------------------------------------------------------------------------


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
    from services.runtime.eventstore import connect, read_job_events

    nc = await connect(url, "tubeflow-replay")
    try:
        stored = await read_job_events(nc.jetstream(), job_id, until=until)
    finally:
        await nc.close()
    return [(s.seq, s.event, s.error) for s in stored]


def _events_from_api(base: str, job_id: str, until: int | None):
    from contracts.events import CURRENT_VERSION, InvalidEvent, parse_event

    out = []
    after = 0
    while True:
        url = f"{base.rstrip('/')}/api/jobs/{job_id}/events?after={after}&limit=1000"
        with urllib.request.urlopen(url, timeout=30) as response:
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
    from contracts.fold import apply

    try:
        if args.api:
            events = _events_from_api(args.api, args.job_id, args.until_seq)
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
        view = apply(view, event)
        if not args.json:
            when = event.occurred_at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            print(f"{seq:>8}  {when:<26}  {event.type:<18}  {event.item_id or '-':<6}  {_summary(event)}")
    if args.json:
        print(view.model_dump_json() if view is not None else "null")
    elif view is not None:
        print(f"-> {view.status} {view.progress.percent:.1f}% at seq {view.seq}")
    return 0


def _read_models(action: str) -> int:
    from services.progress.rebuild import rebuild, verify
    from services.runtime.eventstore import connect, ensure_topology

    settings = Settings()
    if not settings.nats_url:
        print("TUBEFLOW_NATS_URL is not set", file=sys.stderr)
        return 2

    async def run() -> int:
        nc = await connect(settings.nats_url, f"tubeflow-{action}")  # type: ignore[arg-type]
        try:
            js = nc.jetstream()
            await ensure_topology(js)
            if action == "rebuild":
                count = await rebuild(js)
                print(f"rebuilt the read models of {count} job(s) from the stream")
                return 0
            problems = await verify(js)
            for problem in problems:
                print(problem)
            if problems:
                print(f"{len(problems)} difference(s) between the read models and the fold", file=sys.stderr)
                return 1
            print("the read models equal a fresh fold of the stream")
            return 0
        finally:
            await nc.close()

    return asyncio.run(run())


def cmd_setup(args: argparse.Namespace) -> int:
    from services.runtime.topology import setup

    settings = Settings()
    if not settings.nats_url:
        print("TUBEFLOW_NATS_URL is not set", file=sys.stderr)
        return 2
    changes, problems = asyncio.run(setup(settings))
    for line in changes:
        print(line)
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


def cmd_get(args: argparse.Namespace) -> int:
    from services.runtime.follow import run_get

    return run_get(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tubeflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run everything, with an embedded NATS unless TUBEFLOW_NATS_URL is set")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--data-dir", default=None, help="media and NATS store (default ./tubeflow-data)")
    up.set_defaults(func=cmd_up)

    service = sub.add_parser("service", help="run one service against TUBEFLOW_NATS_URL")
    service.add_argument("name", choices=SERVICES)
    service.add_argument("--host", default="127.0.0.1", help="api only")
    service.add_argument("--port", type=int, default=8000, help="api only")
    service.set_defaults(func=cmd_service)

    replay = sub.add_parser("replay", help="print a job's event timeline, or its folded view with --json")
    replay.add_argument("job_id")
    source = replay.add_mutually_exclusive_group(required=True)
    source.add_argument("--api", help="base URL of a tubeflow API, e.g. http://127.0.0.1:8000")
    source.add_argument("--nats", help="NATS URL, e.g. nats://127.0.0.1:4222")
    replay.add_argument("--until-seq", type=int, default=None, help="fold only events up to this stream sequence")
    replay.add_argument("--json", action="store_true", help="print only the folded JobView as JSON")
    replay.set_defaults(func=cmd_replay)
    get = sub.add_parser("get", help="submit a URL to a running tubeflow and follow it with progress bars")
    get.add_argument("url")
    get.add_argument("--mode", choices=("video", "audio", "both"), default="video")
    get.add_argument("--audio-format", choices=("mp3", "m4a", "opus", "flac", "wav"), default="mp3")
    get.add_argument("--format", default=None, help="yt-dlp format selector")
    get.add_argument("--api", default=None, help="tubeflow API base URL (default http://127.0.0.1:8000)")
    get.add_argument("--json", action="store_true", help="print newline-delimited JobView snapshots")
    get.set_defaults(func=cmd_get)

    setup = sub.add_parser("setup", help="create or update streams, buckets and consumers; report what changed")
    setup.set_defaults(func=cmd_setup)

    rebuild = sub.add_parser("rebuild", help="throw the read models away and fold the whole stream again")
    rebuild.set_defaults(func=lambda args: _read_models("rebuild"))
    verify = sub.add_parser("verify", help="compare the read models with a fresh fold; exit 1 on any difference")
    verify.set_defaults(func=lambda args: _read_models("verify"))
    return parser


def main(argv: list[str] | None = None) -> None:
    _setup_logging()
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
