"""The child's side of a slot (see ``slots``): a process of its own (and its own process group, so a kill takes its
ffmpeg along) running up to ``SlotConfig.lanes`` yt-dlp calls at once for the service, each on a thread of its own
(a lane), all sharing this process's memory.

A reader thread takes every message off the pipe: a new call starts a lane; a stop for a running call is noted (the
call's progress hook and its next request raise, a recording's ffmpeg is asked to finish); a kill for a call ends the
programs that call started (ffmpeg, Deno), not the others'; a reply to a question (may this file be reused?) is
handed to the call waiting for it; the pipe closing means the service is gone, and so is this process. A beat is
sent twice a second: a process that stops beating holds its interpreter (a regular expression backtracking with the
lock held), and the service moves its other calls elsewhere (``slots``).
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import signal
import subprocess
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, Callable

from services.engine.guard_proxy import GuardProxy
from services.engine.media import plain_report
from services.engine.slots import SlotConfig
from services.engine.upstream import Upstream
from services.runtime.addresses import AddressPolicy
from services.runtime.cancellation import Aborted
from services.runtime.failures import MediaError

log = logging.getLogger("tubeflow.slot")

# Reports the parent needs; the rest ("starting", "waiting") are only chances to hear a stop.
FORWARDED = frozenset({"downloading", "finished", "recording", "postprocess", "postprocessing"})
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy")
# How often the process says it is alive (see ``slots.STALL``).
BEAT = 0.5


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
    """The pipe's reader, and what the lanes share: stops asked, the programs each call started, replies awaited."""

    def __init__(self, conn: Connection) -> None:
        super().__init__(name="slot-inbox", daemon=True)
        self._conn = conn
        self._send_lock = threading.Lock()
        self.requests: queue.Queue[tuple[str, int, dict[str, Any]]] = queue.Queue()
        self._replies: dict[int, queue.Queue[Any]] = {}
        self._stops: dict[int, str] = {}
        self._rates: dict[int, float | None] = {}
        self._killed: set[int] = set()
        self._children: dict[int, list[subprocess.Popen]] = {}
        self._active: set[int] = set()  # calls started and not yet answered (a late stop for another is dropped)
        self._lock = threading.Lock()

    def run(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                # The service is gone (or killed): so is everything this slot runs.
                os.killpg(os.getpgrp(), signal.SIGKILL)
                return
            kind = message[0]
            if kind == "reused":
                box = self._replies.get(message[1])
                if box is not None:
                    box.put(message[2])
            elif kind == "rate":
                with self._lock:
                    if message[1] in self._active:
                        self._rates[message[1]] = message[2]
            elif kind in ("stop", "kill"):
                with self._lock:
                    if message[1] not in self._active:
                        continue
                if kind == "stop":
                    self._stops[message[1]] = message[2]
                else:
                    self._kill_children(message[1])
            else:
                with self._lock:
                    self._active.add(message[1])
                self.requests.put(message)

    def send(self, message: tuple) -> None:
        with self._send_lock:
            self._conn.send(message)

    def beat(self) -> None:
        while True:
            time.sleep(BEAT)
            try:
                self.send(("beat",))
            except OSError:
                return

    def stop_reason(self, seq: int) -> str | None:
        return self._stops.get(seq)

    def rate(self, seq: int) -> float | None:
        return self._rates.get(seq)

    def ask(self, seq: int, question: tuple) -> Any:
        box = self._replies.setdefault(seq, queue.Queue())
        self.send(question)
        return box.get()

    def adopt(self, seq: int, child: subprocess.Popen) -> None:
        """A program the call ``seq`` started (ffmpeg, Deno): ended with the call's kill."""
        with self._lock:
            self._children.setdefault(seq, []).append(child)
            killed = seq in self._killed
        if killed:
            _end(child)

    def _kill_children(self, seq: int) -> None:
        with self._lock:
            self._killed.add(seq)
            children = list(self._children.get(seq, ()))
        for child in children:
            _end(child)

    def forget(self, seq: int) -> None:
        with self._lock:
            self._active.discard(seq)
            self._children.pop(seq, None)
            self._killed.discard(seq)
            self._stops.pop(seq, None)
            self._rates.pop(seq, None)
        self._replies.pop(seq, None)


def _end(child: subprocess.Popen) -> None:
    try:
        child.kill()
    except OSError:
        pass


# The call a thread of this process works for (a lane's thread; None elsewhere).
_lane = threading.local()


def _follow_lanes(inbox: _Inbox) -> None:
    """Every program started from a lane is that call's (its kill ends them); every request yt-dlp makes for a call
    that was asked to stop fails at once (a resolve has no progress hook to hear a stop through)."""
    from yt_dlp import YoutubeDL

    popen_init = subprocess.Popen.__init__

    def init(self: subprocess.Popen, *args: Any, **kwargs: Any) -> None:
        popen_init(self, *args, **kwargs)
        seq = getattr(_lane, "seq", None)
        if seq is not None:
            inbox.adopt(seq, self)

    subprocess.Popen.__init__ = init  # type: ignore[method-assign]
    urlopen = YoutubeDL.urlopen

    def checked_urlopen(self: Any, req: Any) -> Any:
        seq = getattr(_lane, "seq", None)
        if seq is not None and (reason := inbox.stop_reason(seq)) is not None:
            raise Aborted(reason)
        return urlopen(self, req)

    YoutubeDL.urlopen = checked_urlopen  # type: ignore[method-assign]


def _die_with_parent() -> None:
    """SIGKILL when the zygote (our parent, which ends with the service) goes: the kernel delivers it even while this
    process is deep in a regular expression holding the GIL, where the inbox thread could not run."""
    parent = os.getppid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() != parent:  # the parent went before the line above took effect
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
        size=config.lanes,
        policy=policy,
        max_recording=config.max_recording,
        proxy=proxy,
        operator_params=dict(config.operator_params),
        sites=config.sites,
        request_sleeps=dict(config.request_sleeps),
    )
    inbox = _Inbox(conn)
    _follow_lanes(inbox)
    inbox.start()
    # One YoutubeDL now; a lane that finds none idle makes another (up to one per lane).
    engine.warm_up(extractors=False, instances=1)
    threading.Thread(target=inbox.beat, name="slot-beat", daemon=True).start()
    inbox.send(("ready", os.getpid()))
    while True:
        request = inbox.requests.get()
        threading.Thread(
            target=_lane_main, args=(engine, inbox, guard, request, config), name=f"lane-{request[1]}", daemon=True
        ).start()


def _lane_main(engine: Any, inbox: _Inbox, guard: GuardProxy | None, request: tuple, config: SlotConfig) -> None:
    kind, seq = request[0], request[1]
    _lane.seq = seq
    try:
        reply = _answer(engine, inbox, guard, request, config)
        if reply[0] != "done":
            # A call stopped by an exception leaves yt-dlp's open response in a reference cycle (its traceback's
            # frames): collected now, its connection closes now. A paused download's stayed open, unread, until
            # the next collection (issue 23: seen still open 8 s after the pause).
            gc.collect()
        try:
            inbox.send((reply[0], seq, reply[1]))
        except Exception:  # e.g. a probe that can't be pickled: the answer without it
            if reply[0] == "done" and getattr(reply[1], "probe", None) is not None:
                from dataclasses import replace

                inbox.send(("done", seq, replace(reply[1], probe=None)))
            else:
                inbox.send(
                    ("failed", seq, ("download_error", f"the {kind}'s answer could not be sent", False, None, None))
                )
    finally:
        _lane.seq = None
        inbox.forget(seq)


def _answer(engine: Any, inbox: _Inbox, guard: GuardProxy | None, request: tuple, config: SlotConfig) -> tuple:
    kind, seq, kwargs = request
    began = time.monotonic()
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
        refused = guard.refused_since(began) if guard is not None else None
        if refused is not None:
            # ffmpeg's own failure ("Server returned 403 Forbidden") is the guard's refusal: say so.
            return ("failed", ("forbidden_address", refused.removeprefix("forbidden_address: "), False, None, None))
        return ("failed", (exc.code, exc.message, exc.transient, exc.step, exc.retry_after))
    except Exception as exc:
        stopped = inbox.stop_reason(seq)
        if stopped:
            return ("aborted", stopped)
        log.exception("slot call failed")
        return ("failed", ("download_error", f"{type(exc).__name__}: {exc}", False, None, None))


class Meter:
    """One download's bytes over the network, block by block (yt-dlp calls the hook after each): counted, not those
    resumed from a partial file, and held to the rate the service sends (the schedule's budget share)."""

    # A first report of at most this much is a fresh start (all of it came now); more, a resumed file.
    FRESH = 256 * 1024
    # More than yt-dlp reads in one block (4 MiB at most): a step of a count that took in a resumed file (the next
    # stream of a merge, resumed), not bytes that came now.
    JUMP = 4 * 1024 * 1024 + 65536
    # Credit a download may build up while it waits for the server (a short burst after, then the rate again).
    BURST = 0.1

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.received = 0
        self._last: int | None = None
        self._clock, self._sleep = clock, sleep
        self._due = clock()

    def block(self, downloaded: int) -> int:
        """The bytes new since the last report (``downloaded``: yt-dlp's count, which a resume starts high)."""
        last, self._last = self._last, downloaded
        if last is None or downloaded < last:  # the first report, or another file
            new = downloaded if downloaded <= self.FRESH else 0
        else:
            new = downloaded - last if downloaded - last <= self.JUMP else 0
        self.received += new
        return new

    def pace(self, new: int, rate: float | None, stopped: Callable[[], bool]) -> None:
        """Wait until ``new`` more bytes fit the rate (bytes a second; None: no wait)."""
        now = self._clock()
        if not rate or rate <= 0:
            self._due = now
            return
        self._due = max(self._due, now - self.BURST) + new / rate
        while (wait := self._due - self._clock()) > 0 and not stopped():
            self._sleep(min(wait, 0.2))


def _download(engine: Any, inbox: _Inbox, seq: int, kwargs: dict[str, Any], interval: float) -> Any:
    last = [0.0]
    meter = Meter()

    def hook(d: dict[str, Any]) -> None:
        reason = inbox.stop_reason(seq)
        if reason is not None:
            raise Aborted(reason)
        status = d.get("status")
        if status == "live":
            inbox.send(("live", seq))
            return
        if status not in FORWARDED:
            return
        if status in ("downloading", "finished") and d.get("downloaded_bytes") is not None:
            new = meter.block(int(d["downloaded_bytes"]))
            if status == "downloading":
                meter.pace(new, inbox.rate(seq), lambda: inbox.stop_reason(seq) is not None)
        if status in ("downloading", "recording", "postprocessing"):
            now = time.monotonic()
            if now - last[0] < interval:
                return
            last[0] = now
        report = plain_report(d)
        if meter.received:
            report["received_bytes"] = meter.received
        inbox.send(("hook", seq, report))

    return engine.download(**kwargs, hook=hook, reuse=lambda key: inbox.ask(seq, ("reuse", seq, key)))
