"""The child's side of a slot (see ``slots``): a process of its own (and its own process group, so a kill takes its
ffmpeg along) running one yt-dlp call at a time for the service.

A reader thread takes every message off the pipe: a stop for the running call is noted (the call's progress hook
raises on its next report, a recording's ffmpeg is asked to finish); a reply to a question (may this file be
reused?) is handed to the waiting call; the pipe closing means the service is gone, and so is this process.
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from services.engine.guard_proxy import GuardProxy
from services.engine.media import plain_report
from services.engine.slots import SlotConfig
from services.engine.upstream import Upstream
from services.runtime.addresses import AddressPolicy
from services.runtime.cancellation import Aborted
from services.runtime.failures import MediaError

log = logging.getLogger("tubeflow.slot")

# Reports the parent needs; the rest ("starting", "waiting") are only chances to hear a stop.
FORWARDED = frozenset({"downloading", "finished", "recording", "postprocess"})
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy")


def warm_extractors() -> None:
    from yt_dlp.extractor import gen_extractor_classes

    for extractor in gen_extractor_classes():
        extractor.suitable("http://127.0.0.1/warm-up.mp4")


def _drop_proxy_environment() -> None:
    """Proxies come from TUBEFLOW_PROXY only: one in the environment would silently carry every download (and the
    address guard would see only the proxy's address)."""
    for name in list(os.environ):
        if name.lower() in PROXY_VARIABLES:
            del os.environ[name]


class _Inbox(threading.Thread):
    def __init__(self, conn: Connection) -> None:
        super().__init__(name="slot-inbox", daemon=True)
        self._conn = conn
        self._send_lock = threading.Lock()
        self.requests: queue.Queue[tuple[str, int, dict[str, Any]]] = queue.Queue()
        self._replies: queue.Queue[tuple[int, Any]] = queue.Queue()
        self._stops: dict[int, str] = {}

    def run(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                # The service is gone (or killed): so is everything this slot runs.
                os.killpg(os.getpgrp(), signal.SIGKILL)
                return
            kind = message[0]
            if kind == "stop":
                self._stops[message[1]] = message[2]
            elif kind == "reused":
                self._replies.put((message[1], message[2]))
            else:
                self.requests.put(message)

    def send(self, message: tuple) -> None:
        with self._send_lock:
            self._conn.send(message)

    def stop_reason(self, seq: int) -> str | None:
        return self._stops.get(seq)

    def ask(self, seq: int, question: tuple) -> Any:
        self.send(question)
        while True:
            answered, value = self._replies.get()
            if answered == seq:
                return value


def _die_with_parent() -> None:
    """SIGKILL when the fork server (our parent, which exits with the service) goes: the kernel delivers it even
    while this process is deep in a regular expression holding the GIL, where the inbox thread could not run.

    The fork server exits when every holder of its "alive" pipe is gone, and multiprocessing hands that pipe to each
    child it forks (so a child could start processes of its own through it). A slot never does: it lets go of it,
    or a slot stuck in a regex would keep the fork server, and so itself, alive after the service died."""
    from multiprocessing import forkserver

    server = forkserver._forkserver  # noqa: SLF001 - the one place multiprocessing keeps that descriptor
    if getattr(server, "_forkserver_alive_fd", None) is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() == 1:  # the parent went before the line above took effect
        os._exit(1)


def serve(conn: Connection, config: SlotConfig) -> None:
    os.setpgid(0, 0)
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the terminal is the service's to handle
    _drop_proxy_environment()
    from services.engine.pages import bound_page_reads
    from services.engine.realsites import prepare_slot, route_curl
    from services.engine.ytdlp import YtDlp

    bound_page_reads()
    prepare_slot(config.sites)

    guard = None
    proxy = config.proxy
    if not config.policy.open:
        # Every ffmpeg this process starts connects through the address guard; with TUBEFLOW_PROXY, yt-dlp's own
        # requests do too, and the guard goes on through that proxy to the address it checked (before, the policy
        # was off with a proxy: a redirect to an inside address was asked of it, issue 23).
        upstream = Upstream.parse(config.proxy) if config.proxy else None
        guard = GuardProxy(config.policy, upstream).start()
        os.environ["http_proxy"] = guard.url
        # curl (impersonated requests) resolves names itself: its requests go through the guard too.
        route_curl(guard.url)
        if upstream is not None:
            proxy = guard.url
    # yt-dlp's own name lookups are checked unless its requests go to a proxy: then they go to the guard (on
    # loopback, which checks each destination) or, with an open policy, to TUBEFLOW_PROXY itself.
    policy = AddressPolicy(allow_private=True) if proxy else config.policy
    engine = YtDlp(
        size=1,
        policy=policy,
        max_recording=config.max_recording,
        proxy=proxy,
        operator_params=dict(config.operator_params),
        sites=config.sites,
    )
    inbox = _Inbox(conn)
    inbox.start()
    engine.warm_up(extractors=False)
    inbox.send(("ready", os.getpid()))
    while True:
        kind, seq, kwargs = inbox.requests.get()
        if guard is not None:
            guard.refusals.clear()
        reply = _answer(engine, inbox, guard, (kind, seq, kwargs), config)
        if reply[0] != "done":
            # A call stopped by an exception leaves yt-dlp's open response in a reference cycle (its traceback's
            # frames): collected now, its connection closes now. A paused download's stayed open, unread, until
            # the next collection (issue 23: seen still open 8 s after the pause).
            gc.collect()
        try:
            inbox.send(reply)
        except Exception:  # e.g. a probe that can't be pickled: the answer without it
            if reply[0] == "done" and getattr(reply[1], "probe", None) is not None:
                from dataclasses import replace

                inbox.send(("done", replace(reply[1], probe=None)))
            else:
                raise


def _answer(engine: Any, inbox: _Inbox, guard: GuardProxy | None, request: tuple, config: SlotConfig) -> tuple:
    kind, seq, kwargs = request
    try:
        if kind == "resolve":
            return ("done", engine.resolve(**kwargs))
        if kind == "facts":
            return ("done", engine.facts(**kwargs))
        return ("done", _download(engine, inbox, seq, kwargs, config.forward_interval))
    except Aborted as exc:
        return ("aborted", exc.reason)
    except MediaError as exc:
        stopped = inbox.stop_reason(seq)
        if stopped:
            return ("aborted", stopped)
        if guard is not None and guard.refusals:
            # ffmpeg's own failure ("Server returned 403 Forbidden") is the guard's refusal: say so.
            refused = guard.refusals[0].removeprefix("forbidden_address: ")
            return ("failed", ("forbidden_address", refused, False, None, None))
        return ("failed", (exc.code, exc.message, exc.transient, exc.step, exc.retry_after))
    except Exception as exc:
        log.exception("slot call failed")
        return ("failed", ("download_error", f"{type(exc).__name__}: {exc}", False, None))


def _download(engine: Any, inbox: _Inbox, seq: int, kwargs: dict[str, Any], interval: float) -> Any:
    last = [0.0]

    def hook(d: dict[str, Any]) -> None:
        reason = inbox.stop_reason(seq)
        if reason is not None:
            raise Aborted(reason)
        status = d.get("status")
        if status == "live":
            inbox.send(("live",))
            return
        if status not in FORWARDED:
            return
        if status in ("downloading", "recording"):
            now = time.monotonic()
            if now - last[0] < interval:
                return
            last[0] = now
        inbox.send(("hook", plain_report(d)))

    return engine.download(**kwargs, hook=hook, reuse=lambda key: inbox.ask(seq, ("reuse", key)))
