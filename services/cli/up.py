"""`tubeflow up` (every service, with an embedded NATS unless one is given) and `tubeflow service NAME` (one)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib
import logging
import signal
import sys
from pathlib import Path
from typing import Awaitable, Callable

from services.cli.setup import SERVICE_MODULES
from services.runtime.settings import Settings

log = logging.getLogger("tubeflow")

# Services `tubeflow up` runs in a child process of its own rather than on its event loop.
UP_CHILDREN = ("downloader",)


# A worker service that stops because NATS did not answer (a cluster still electing its leaders, a node lost) is
# started again this many times, after 1, 2, 4… s: one such timeout at start stopped all of `tubeflow up --cluster`.
RESTARTS = 5


def _service(name: str, host: str, port: int) -> Callable[[Settings, asyncio.Event], Awaitable[None]]:
    """The ``run(settings, stop)`` of a service's composition root (the API's also takes where to listen)."""
    module = importlib.import_module(SERVICE_MODULES[name])
    if name == "api":
        return functools.partial(module.run, host=host, port=port)
    return functools.partial(_restarting, name, module.run)


async def _restarting(
    name: str, run: Callable[[Settings, asyncio.Event], Awaitable[None]], settings: Settings, stop: asyncio.Event
) -> None:
    """``run``, started again when it stops because NATS did not answer (each service is built to die and come back:
    what it had taken is redelivered, what it had folded is read again)."""
    from services.runtime.nats import NATS_AWAY

    for attempt in range(RESTARTS + 1):
        try:
            return await run(settings, stop)
        except NATS_AWAY as exc:
            if stop.is_set() or attempt == RESTARTS:
                raise
            delay = 2.0**attempt
            log.warning("service %s stopped: NATS did not answer (%s); starting it again in %g s", name, exc, delay)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return


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
            "TUBEFLOW_STREAM_REPLICAS": str(settings.stream_replicas),
            "TUBEFLOW_DECLARE": "false",  # `up` declared the topology before starting its services
            "TUBEFLOW_HEALTH_PORT": "0",  # `up` answers health checks on the API's port
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli",
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
    names: list[str],
    settings: Settings,
    host: str,
    port: int,
    on_ready=None,  # noqa: ANN001
    children: tuple[str, ...] = (),
    on_stopping=None,  # noqa: ANN001
) -> int:
    """Run services until SIGINT/SIGTERM, or until one of them fails (then stop the rest). Returns an exit code."""
    from services.runtime.infrastructure import StoppedWhileStarting, unless_stopped
    from services.runtime.nats import connect, prepare
    from services.runtime.tasks import cancel_until_done
    from services.runtime.tracing import setup_tracing

    setup_tracing(settings.tracing, names[0] if len(names) == 1 else "up")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _stopper(stop, on_stopping))
    try:
        nc = await unless_stopped(
            connect(
                settings.nats_url, "tubeflow-setup", auth=settings.nats_auth(), timeout=settings.nats_connect_timeout
            ),
            stop,
            "setup",
        )  # type: ignore[arg-type]
        try:
            created = await unless_stopped(prepare(nc.jetstream(), settings), stop, "setup")
            if created:
                log.info("created %s", ", ".join(created))
        finally:
            await nc.close()
    except StoppedWhileStarting:
        return 0
    # Declared once here: the services only check that it is there.
    settings = settings.model_copy(update={"declare": False})
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
    # A service still starting when the stop came may be waiting on a NATS server that is gone (killed along with
    # `tubeflow up`): after the grace period it is cancelled rather than waited for.
    _, stuck = await asyncio.wait(tasks, timeout=settings.shutdown_grace + 5.0)
    for task in stuck:
        log.warning("service %s did not stop within the grace period: cancelled", tasks[task])
        await cancel_until_done(task)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for task, result in zip(tasks, results, strict=True):
        if isinstance(result, BaseException) and not isinstance(result, (asyncio.CancelledError, StoppedWhileStarting)):
            if task not in done:
                log.error("service %s failed while stopping: %s", tasks[task], result)
    stopper.cancel()
    return code


def _stopper(stop: asyncio.Event, on_stopping):  # noqa: ANN001, ANN202
    def stop_once() -> None:
        if not stop.is_set() and on_stopping is not None:
            on_stopping()
        stop.set()

    return stop_once


def run_loop(main: Awaitable[int]) -> int:
    """Run a service's main coroutine on uvloop (libuv's event loop: less overhead per socket operation, measured in
    docs/benchmarks.md), or on asyncio's own loop where uvloop is not available."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return asyncio.run(main)  # type: ignore[arg-type]
    return uvloop.run(main)  # type: ignore[arg-type]


def _embedded_nats(settings: Settings, cluster: int | None):  # noqa: ANN202
    """The NATS `tubeflow up` starts when none is given: one server, or a cluster of ``cluster`` nodes (streams and
    buckets then keep a copy on each)."""
    from services.runtime.embedded import EmbeddedNats
    from services.runtime.embedded_cluster import EmbeddedCluster

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not cluster:
        embedded = EmbeddedNats(settings.nats_store_dir, log_file=settings.data_dir / "nats-server.log")
        url = embedded.start()
        log.info("embedded NATS with JetStream at %s, storing in %s", url, settings.nats_store_dir)
        return embedded, settings.model_copy(update={"nats_url": url})
    store = settings.data_dir / "nats-cluster"
    embedded = EmbeddedCluster(store, cluster, log_dir=settings.data_dir)
    url = embedded.start()
    print(
        f"embedded NATS cluster of {cluster} nodes, {cluster} replicas of everything, storing in {store};"
        " kill a node to watch tubeflow carry on (it is started again after 5 s):",
        *embedded.describe(),
        sep="\n",
        flush=True,
    )
    return embedded, settings.model_copy(update={"nats_url": url, "stream_replicas": cluster})


def cmd_up(args: argparse.Namespace) -> int:
    settings = Settings()
    data_dir = Path(args.data_dir) if args.data_dir else settings.data_dir
    # Notifications link to the media where this API serves it, unless TUBEFLOW_PUBLIC_URL says otherwise.
    public_url = settings.public_url or f"http://{args.host}:{args.port}"
    settings = settings.model_copy(update={"data_dir": data_dir.resolve(), "public_url": public_url})
    cluster = getattr(args, "cluster", None)
    if cluster and settings.nats_url:
        print("--cluster starts an embedded NATS cluster: unset TUBEFLOW_NATS_URL to use it", file=sys.stderr)
        return 2
    embedded = None
    if not settings.nats_url:
        embedded, settings = _embedded_nats(settings, cluster)

    def ready() -> None:
        print(f"tubeflow is up: http://{args.host}:{args.port}  (Ctrl-C stops it)", flush=True)

    def stopping() -> None:
        print("stopping…", flush=True)

    try:
        in_process = [name for name in SERVICE_MODULES if name not in UP_CHILDREN]
        return run_loop(
            run_services(
                in_process, settings, args.host, args.port, on_ready=ready, children=UP_CHILDREN, on_stopping=stopping
            )
        )
    finally:
        # Last: the services have handed their work back to it by now.
        if embedded is not None:
            embedded.stop()
        print("stopped", flush=True)


def cmd_service(args: argparse.Namespace) -> int:
    settings = Settings()
    if not settings.nats_url:
        print("TUBEFLOW_NATS_URL is not set: `tubeflow service` connects to an existing NATS server", file=sys.stderr)
        return 2
    return run_loop(run_services([args.name], settings, args.host, args.port))
