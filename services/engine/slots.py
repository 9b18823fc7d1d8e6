"""yt-dlp work in slot processes: each runs up to ``lanes`` calls at once (threads sharing its memory), is reused
from call to call, and is killed when a call must stop and does not.

Why processes: a thread running yt-dlp can't be stopped from outside. A resolve blocked on a server that trickles a
byte every few seconds, a regular expression backtracking with the GIL held, an ffmpeg merge: none of them checks a
flag. Each call has a wall-clock deadline and a cancel that holds within seconds: the call is asked to stop (its
hook and its next request raise), then what it started (ffmpeg, Deno) is killed, then, if it still runs, its whole
process (its own process group). The other calls that process ran are not failed for it: they run again in another
process (a download resumes from its partial file). A process that stops answering (a regex holding the interpreter,
so not even its beat gets out) is killed and its calls run again each in a process of their own, where the guilty
one stalls alone until its deadline or cancel. Nothing a call does holds the service's event loop.

Why lanes: a process per call costs ~30 MiB PSS each (issue 25: 50 downloads at once took 53 processes and 1.45 GB);
calls sharing a process share its interpreter, yt-dlp and their caches. The processes fork from a zygote that has
yt-dlp imported and its extractors' patterns compiled (``zygote``, ``preload``), so a new one is ready in a fraction
of a second.

This module runs in the service's process and does not import yt-dlp; ``slot_process`` is the child's side.
Messages on the pipe (pickled tuples), parent -> child: ("resolve" | "download" | "facts", seq, kwargs), ("stop", seq,
reason), ("kill", seq), ("reused", seq, Downloaded | None), ("rate", seq, bytes a second | None); child -> parent: ("ready", pid), ("beat",), ("hook", seq,
report), ("reuse", seq, key), ("live", seq), ("done", seq, result), ("failed", seq, (code, message, transient, step,
retry_after)), ("aborted", seq, reason).
"""

from __future__ import annotations

import itertools
import logging
import math
import multiprocessing
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from contracts.options import DownloadOptions
from services.engine.media import Downloaded, PlaylistPlace, Probes, ProgressHook, Resolution, Reuse
from services.engine.realsites import RealSites
from services.engine.zygote import start_slot
from services.runtime.addresses import AddressPolicy
from services.runtime.cancellation import Aborted, CancelToken
from services.runtime.failures import MediaError

log = logging.getLogger("tubeflow.slots")

# How often a waiting call looks at its token and deadline.
POLL = 0.1
# After a stop is asked, how long a call may take to wind down by itself (partial files closed, a live recording's
# ffmpeg finishing its file) before what it started (ffmpeg, Deno) is killed, and KILL_GRACE later its process (and
# the other calls there run again elsewhere). A resolve hears the stop before its next request.
STOP_GRACE = {"download": 3.0, "resolve": 0.5}
RECORDING_STOP_GRACE = 15.0
KILL_GRACE = 1.0
# A process that has sent nothing (its beat is twice a second) for this long holds its interpreter (see
# ``slot_process``).
STALL = 5.0
# Calls one slot process runs at once unless the settings say (TUBEFLOW_SLOT_LANES).
LANES = 32
# Seconds a slot process with nothing to do is kept before it ends (TUBEFLOW_SLOT_IDLE_SECONDS; 0: kept). Its zygote
# ends too once it has no slot left for as long (``zygote``); the next call forks a new one (~0.1 s), or starts a new
# zygote first (~1 s). An idle stack then holds no yt-dlp at all, and a slot's memory (yt-dlp's caches, the heap a
# long run leaves) does not stay with the service for good.
IDLE_SECONDS = 300.0
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class SlotConfig:
    """What every slot process is built with."""

    policy: AddressPolicy = AddressPolicy()
    max_recording: float = 6 * 3600.0
    proxy: str | None = None
    # A report of bytes read is forwarded at most this often (the handlers throttle further).
    forward_interval: float = 0.05
    # The operator's extra YoutubeDL params (TUBEFLOW_YTDLP_OPTIONS_FILE), trusted.
    operator_params: tuple[tuple[str, Any], ...] = ()
    # What real sites need: the JS runtime, impersonation rules, the PO-token provider, plugins (see realsites).
    sites: RealSites = field(default_factory=RealSites)
    # Calls one process runs at once, on threads sharing its memory (1: a process per call).
    lanes: int = LANES
    # Seconds an idle slot process (and its zygote, once it has no slot) is kept (0: kept while the service runs).
    idle_seconds: float = IDLE_SECONDS
    # Seconds yt-dlp sleeps between its requests for a download from a site (TUBEFLOW_SITE_PACING's requests:…).
    request_sleeps: tuple[tuple[str, float], ...] = ()
    # The yt-dlp the slots run: a folder put first on their sys.path (an update, services.engine.updates); None:
    # the bundled one.
    engine_path: str | None = None

    @classmethod
    def from_settings(cls, settings: Any, sites: RealSites | None = None) -> "SlotConfig":
        """The slots the operator's settings ask for (the downloader's, the scheduler's, the doctor's)."""
        from services.engine.options import operator_params
        from services.runtime.sitelimits import parse_pacing

        return cls(
            policy=settings.address_policy(),
            max_recording=settings.max_recording,
            proxy=settings.proxy,
            operator_params=tuple(operator_params(settings.ytdlp_options_file).items()),
            request_sleeps=tuple(
                (site, pacing.requests)
                for site, pacing in parse_pacing(getattr(settings, "site_pacing", None)).items()
                if pacing.requests
            ),
            sites=sites or RealSites.from_settings(settings),
            lanes=settings.slot_lanes,
            idle_seconds=settings.slot_idle_seconds,
        )


class _Lost(Exception):
    """The process running a call went away on purpose (killed for another call, or for holding its interpreter):
    the call runs again elsewhere; ``alone``: in a process of its own."""

    def __init__(self, alone: bool) -> None:
        super().__init__("lost")
        self.alone = alone


class _Host:
    """One slot process and the pipe to it, running up to ``lanes`` calls at once (threads there). A reader thread
    here takes each message off the pipe and hands it to the call it is for."""

    def __init__(self, config: SlotConfig, number: int, lanes: int) -> None:
        self.number = number
        self.lanes = lanes
        self.taken = 0  # lanes handed out (by the pool, under its lock)
        self.idle_since = time.monotonic()  # when ``taken`` last became 0
        # Runs a yt-dlp the pool no longer starts calls on (it switched): ended once its calls are done.
        self.retired = False
        self._calls: dict[int, queue.Queue[tuple]] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._killed: str | None = None  # why, when killed on purpose
        self._guilty: int | None = None
        self.heard = time.monotonic()
        ours, theirs = multiprocessing.Pipe(duplex=True)
        try:
            self._pid = start_slot(replace(config, lanes=lanes), theirs.fileno())
        except (OSError, RuntimeError) as exc:
            raise MediaError(
                "worker_unavailable", f"no yt-dlp slot process could be started: {exc}", transient=True
            ) from exc
        finally:
            theirs.close()
        self._conn = ours
        self.alive = True
        if not ours.poll(START_TIMEOUT):
            self.kill("crashed")
            ours.close()
            raise MediaError("worker_unavailable", "a yt-dlp slot process did not start", transient=True)
        try:
            ours.recv()  # ("ready", pid)
        except (EOFError, OSError) as exc:
            self.kill("crashed")
            ours.close()
            raise MediaError("worker_unavailable", "a yt-dlp slot process exited at start", transient=True) from exc
        self.heard = time.monotonic()
        threading.Thread(target=self._read, name=f"slot-{number}-reader", daemon=True).start()

    @property
    def pid(self) -> int | None:
        return self._pid if self.alive else None

    def _read(self) -> None:
        conn = self._conn
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            self.heard = time.monotonic()
            if message[0] != "beat":
                box = self._calls.get(message[1])
                if box is not None:
                    box.put(message)
        with self._lock:
            self.alive = False
            calls = dict(self._calls)
        conn.close()
        self._kill_group()
        reason = self._killed or "crashed"
        for seq, box in calls.items():
            if seq != self._guilty:
                box.put(("lost", seq, reason))

    def kill(self, reason: str, guilty: int | None = None) -> None:
        """Kill the process and everything it started (its own process group: ffmpeg included). The calls it ran,
        but ``guilty``, are told why (``reason``): "innocent" or "stall" run again elsewhere, "crashed" fail."""
        with self._lock:
            if self._killed is None:
                self._killed, self._guilty = reason, guilty
        self._kill_group()
        if self.alive:  # itself too, if it had not made its group yet (once gone, its pid may be another's)
            try:
                os.kill(self._pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _kill_group(self) -> None:
        """The process group stays ours while any of it lives (ffmpeg left behind by a slot that died)."""
        try:
            os.killpg(self._pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def send(self, message: tuple) -> None:
        try:
            with self._send_lock:
                self._conn.send(message)
        except OSError:
            pass  # the process is gone; its reader tells the calls

    def call(
        self,
        seq: int,
        kind: str,
        kwargs: dict[str, Any],
        *,
        token: CancelToken | None,
        deadline: float,
        timeout: float,
        live_timeout: float,
        hook: ProgressHook | None = None,
        reuse: Reuse | None = None,
        rate: Callable[[], float | None] | None = None,
    ) -> Any:
        """``rate``: what the download may take now (the schedule's budget share), sent whenever it changes."""
        box: queue.Queue[tuple] = queue.Queue()
        with self._lock:
            if not self.alive:
                raise _Lost(alone=False)
            self._calls[seq] = box
        try:
            self.send((kind, seq, kwargs))
            grace = STOP_GRACE.get(kind, 0.0)
            stopping: tuple[float, str] | None = None
            children_killed = False
            sent_rate: float | None = None
            while True:
                now = time.monotonic()
                if rate is not None and (wanted := rate()) != sent_rate:
                    sent_rate = wanted
                    self.send(("rate", seq, wanted))
                if stopping is None and token is not None and token.reason is not None:
                    stopping = (now, token.reason)
                    self.send(("stop", seq, token.reason))
                if stopping is not None and now - stopping[0] >= grace:
                    if not children_killed:
                        # What it started (ffmpeg) goes first; then, if the call still does not end, its process.
                        self.send(("kill", seq))
                        children_killed = True
                    elif now - stopping[0] >= grace + KILL_GRACE:
                        self.kill("innocent", guilty=seq)
                        raise Aborted(stopping[1])
                if now >= deadline:
                    self.kill("innocent", guilty=seq)
                    setting = "TUBEFLOW_RESOLVE_TIMEOUT" if kind == "resolve" else "TUBEFLOW_DOWNLOAD_TIMEOUT"
                    raise MediaError(f"{kind}_timeout", f"the {kind} took longer than {setting} ({timeout:g} s)")
                if self.lanes > 1 and now - self.heard > STALL and len(self._calls) > 1:
                    # The process holds its interpreter (nothing there runs, not even its beat): one of its calls does,
                    # and it can't be told which. Each runs again in a process of its own; the guilty one stalls there
                    # alone until its deadline or a cancel.
                    log.warning("slot %s stopped answering for %.1f s: its calls run again apart", self.number, STALL)
                    self.kill("stall")
                try:
                    message = box.get(timeout=POLL)
                except queue.Empty:
                    continue
                what = message[0]
                if what == "hook" and hook is not None:
                    try:
                        hook(message[2])
                    except Aborted:
                        pass  # the token says so too: heard above, on the next turn
                elif what == "reuse":
                    try:
                        found = reuse(message[2]) if reuse is not None else None
                    except BaseException:
                        self.kill("innocent", guilty=seq)
                        raise
                    self.send(("reused", seq, found))
                elif what == "live":
                    deadline = max(deadline, now + live_timeout)
                    grace = RECORDING_STOP_GRACE
                elif what == "done":
                    return message[2]
                elif what == "failed":
                    code, text, transient, step, retry_after = message[2]
                    raise MediaError(code, text, transient=transient, step=step, retry_after=retry_after)
                elif what == "aborted":
                    raise Aborted(message[2])
                elif what == "lost":
                    if message[2] == "crashed":
                        raise MediaError(
                            "worker_crashed", f"the yt-dlp process running this {kind} died", transient=True
                        )
                    raise _Lost(alone=message[2] == "stall")

        finally:
            with self._lock:
                self._calls.pop(seq, None)


class SlotPool:
    """The MediaTool the downloader uses: ``size`` calls at once, in slot processes of ``lanes`` calls each (a
    process started when the ones running are full; one idle for ``config.idle_seconds`` ends)."""

    def __init__(
        self,
        size: int,
        config: SlotConfig | None = None,
        *,
        resolve_timeout: float = 600.0,
        download_timeout: float = 4 * 3600.0,
    ) -> None:
        self.config = config or SlotConfig()
        self.resolve_timeout = resolve_timeout
        self.download_timeout = download_timeout
        self._size = size
        # Processes: enough that none runs more than ``config.lanes`` calls, and at least one per CPU (up to one per
        # call), so calls doing Python work at once (extraction, small files) don't all wait on one interpreter
        # lock. Measured on 2 CPUs (issue 25): all 5 calls of the default stack in one process cost 5-25 % of
        # throughput on small clips against a process each; one per CPU keeps it and the memory of fewer processes.
        self._processes = max(math.ceil(size / max(1, self.config.lanes)), min(size, os.cpu_count() or 1))
        self._lanes = math.ceil(size / self._processes)
        self._calls = threading.BoundedSemaphore(size)
        # The processes shared by calls, in the order started (the first ones are filled first: warm, and the
        # later ones idle and end); a call that must run alone gets a process of its own, ended after it.
        self._slots: list[_Host] = []
        # Processes of a yt-dlp switched away from, finishing their calls.
        self._retired: list[_Host] = []
        self._lock = threading.Lock()
        self._starting = threading.Lock()
        self._seq = itertools.count(1)
        self._started = 0
        self._probes = Probes()
        self._closed = False
        self._reaper: threading.Thread | None = None
        self._wake = threading.Event()

    @property
    def probes_reused(self) -> int:
        return self._probes.reused

    @property
    def processes_started(self) -> int:
        return self._started

    def warm_up(self, slots: int = 1) -> None:
        """Start the zygote and ``slots`` slot processes now (blocking: run on a thread). The others start when
        first needed (~0.1 s each, forked from the warm zygote)."""
        with self._starting:
            while not self._closed and len([h for h in self._slots if h.alive]) < slots:
                host = self._start(self._lanes)
                with self._lock:
                    self._slots.append(host)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        with self._lock:
            hosts = list(self._slots) + list(self._retired)
        for host in hosts:
            host.kill("crashed")

    def _start(self, lanes: int) -> _Host:
        self._started += 1
        if self._reaper is None and self.config.idle_seconds > 0:
            self._reaper = threading.Thread(target=self._reap, name="slot-reaper", daemon=True)
            self._reaper.start()
        return _Host(self.config, self._started, lanes)

    def _reap(self) -> None:
        """End the shared processes that have had no call for ``config.idle_seconds`` (taken off the list under the
        lock first, so no call can be handed one as it ends)."""
        idle_seconds = self.config.idle_seconds
        while not self._wake.wait(min(5.0, idle_seconds / 4)):
            now = time.monotonic()
            with self._lock:
                ending = [h for h in self._slots if h.alive and not h.taken and now - h.idle_since >= idle_seconds]
                self._slots = [h for h in self._slots if h not in ending]
            for host in ending:
                log.debug("slot %s idle for %g s: ended", host.number, idle_seconds)
                host.kill("innocent")

    def switch(self, engine_path: str | None) -> None:
        """New calls run on the yt-dlp in ``engine_path`` (None: the bundled one), in slot processes forked from a
        zygote of its own; the calls running finish where they are, their processes ending after them."""
        with self._lock:
            if engine_path == self.config.engine_path:
                return
            self.config = replace(self.config, engine_path=engine_path)
            idle = [h for h in self._slots if not h.taken]
            for host in self._slots:
                host.retired = True
            self._retired = [h for h in (*self._retired, *self._slots) if h.taken and h.alive]
            self._slots = []
        for host in idle:
            host.kill("innocent")

    def _take(self, alone: bool) -> _Host:
        """A lane: in an idle process, else in a new one (up to the pool's count), else in the least busy process
        with one free; ``alone``: a new process of its own."""
        if alone:
            host = self._start(1)
            host.taken = 1
            return host
        while True:
            with self._lock:
                self._slots = [h for h in self._slots if h.alive or h.taken]
                live = [h for h in self._slots if h.alive]
                # An idle process first (the earliest: warm); else a new one while there may be more; else the
                # least busy with a lane free.
                idle = [h for h in live if not h.taken]
                free = [h for h in live if h.taken < h.lanes]
                if idle or (free and len(live) >= self._processes):
                    host = idle[0] if idle else min(free, key=lambda h: h.taken)
                    host.taken += 1
                    return host
            with self._starting:
                with self._lock:
                    live = [h for h in self._slots if h.alive]
                    if any(not h.taken for h in live) or len(live) >= self._processes:
                        continue
                host = self._start(self._lanes)
                with self._lock:
                    self._slots.append(host)

    def _give(self, host: _Host, alone: bool) -> None:
        if alone:
            host.kill("innocent")
            return
        with self._lock:
            host.taken -= 1
            if not host.taken:
                host.idle_since = time.monotonic()
            done = host.retired and not host.taken
        if done:
            host.kill("innocent")

    def _run(
        self,
        kind: str,
        kwargs: dict[str, Any],
        *,
        timeout: float,
        alone: bool = False,
        token: CancelToken | None = None,
        hook: ProgressHook | None = None,
        reuse: Reuse | None = None,
        rate: Callable[[], float | None] | None = None,
    ) -> Any:
        """One call in a lane; ``alone``: in a process of its own, ended after it (the next call forks a clean one).
        A call whose process was killed for another's sake runs again (a download resumes from its partial file)."""
        deadline = time.monotonic() + timeout
        with self._calls:
            while True:
                if self._closed:
                    raise Aborted("shutdown")
                taken_alone = alone
                host = self._take(alone)
                try:
                    return host.call(
                        next(self._seq),
                        kind,
                        kwargs,
                        token=token,
                        deadline=deadline,
                        timeout=timeout,
                        live_timeout=self.config.max_recording + 120.0,
                        hook=hook,
                        reuse=reuse,
                        rate=rate,
                    )
                except _Lost as lost:
                    alone = alone or lost.alone
                finally:
                    self._give(host, taken_alone)

    def resolve(
        self,
        url: str,
        *,
        max_items: int,
        items: str | None = None,
        token: CancelToken | None = None,
        cookies: Path | None = None,
        impersonate: str | None = None,
    ) -> Resolution:
        resolution: Resolution = self._run(
            "resolve",
            {"url": url, "max_items": max_items, "items": items, "cookies": cookies, "impersonate": impersonate},
            token=token,
            timeout=self.resolve_timeout,
        )
        if resolution.probe is not None and resolution.entries:
            self._probes.keep(resolution.entries[0].url, resolution.probe)
        return replace(resolution, probe=None)

    def download(
        self,
        url: str,
        *,
        directory: Path,
        stem: str,
        format: str | None,
        hook: ProgressHook,
        reuse: Reuse | None = None,
        token: CancelToken | None = None,
        max_bytes: int | None = None,
        options: DownloadOptions | None = None,
        playlist: PlaylistPlace | None = None,
        cookies: Path | None = None,
        probe: dict[str, Any] | None = None,
        rate: Callable[[], float | None] | None = None,
        paced: bool = False,
    ) -> Downloaded:
        """``probe``: what another process's resolve found (carried with the item), used when none is kept here;
        ``rate``: the bytes a second it may take, asked while it runs (the schedule's budget; None: no limit);
        ``paced``: a budget is in force, so it reads in small blocks (see YtDlp.download)."""
        kwargs = {
            "cookies": cookies,
            "url": url,
            "directory": directory,
            "stem": stem,
            "format": format,
            "probe": (self._probes.take(url) or probe) if cookies is None else None,
            "max_bytes": max_bytes,
            "options": options,
            "playlist": playlist,
            "paced": paced,
        }
        return self._run(
            "download", kwargs, token=token, timeout=self.download_timeout, hook=hook, reuse=reuse, rate=rate
        )

    def kept_probe(self, url: str) -> dict[str, Any] | None:
        """The probe a resolve here kept for ``url``'s download (left in place), to carry to another process."""
        return self._probes.peek(url)

    def facts(self, script: str | None = None, po_token_for: str | None = None) -> dict[str, Any]:
        """What a slot's yt-dlp can do on real sites (``realsites.collect_facts``); ``po_token_for``: also ask the
        PO-token framework for a token for that visitor (``realsites.request_po_token``). The slot is retired after:
        asking imported YouTube's extractor and the challenge and PO-token machinery into it (~10 MiB, and more
        objects for every collection), which a download of another site does not need."""
        return self._run(
            "facts",
            {"script": script, "po_token_for": po_token_for},
            token=None,
            timeout=self.resolve_timeout,
            alone=True,
        )
