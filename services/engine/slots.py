"""yt-dlp work in slot processes: one child process per job slot, reused from call to call, killed when a call must
stop and it does not.

Why processes: a thread running yt-dlp can't be stopped from outside. A resolve blocked on a server that trickles a
byte every few seconds, a regular expression backtracking with the GIL held, an ffmpeg merge: none of them checks a
flag. In a child process each call has a wall-clock deadline and a cancel that holds within seconds (ask first, kill
the process group after a short grace, which closes its connections and stops its ffmpeg), and nothing it does can
hold the service's event loop or another job. The children fork from a fork server that has imported yt-dlp and
compiled its extractor patterns once (``preload``), so a new slot is ready in a fraction of a second; a slot is only
replaced after a kill or a crash.

This module runs in the service's process and does not import yt-dlp; ``slot_process`` is the child's side.
Messages on the pipe (pickled tuples), parent -> child: ("resolve" | "download" | "facts", seq, kwargs), ("stop", seq,
reason), ("reused", seq, Downloaded | None); child -> parent: ("ready", pid), ("hook", report), ("reuse", key),
("live",), ("done", result), ("failed", (code, message, transient, step)), ("aborted", reason).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from contracts.options import DownloadOptions
from services.engine.media import Downloaded, PlaylistPlace, Probes, ProgressHook, Resolution, Reuse
from services.engine.realsites import RealSites
from services.runtime.addresses import AddressPolicy
from services.runtime.cancellation import Aborted, CancelToken
from services.runtime.failures import MediaError

log = logging.getLogger("tubeflow.slots")

# How often a waiting call looks at its token and deadline.
POLL = 0.1
# After a stop is asked, how long a download may take to wind down by itself (partial files closed, a live
# recording's ffmpeg finishing its file) before its process is killed. A resolve is killed at once.
DOWNLOAD_STOP_GRACE = 3.0
RECORDING_STOP_GRACE = 15.0
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

    @classmethod
    def from_settings(cls, settings: Any, sites: RealSites | None = None) -> "SlotConfig":
        """The slots the operator's settings ask for (the downloader's, the scheduler's, the doctor's)."""
        from services.engine.options import operator_params

        return cls(
            policy=settings.address_policy(),
            max_recording=settings.max_recording,
            proxy=settings.proxy,
            operator_params=tuple(operator_params(settings.ytdlp_options_file).items()),
            sites=sites or RealSites.from_settings(settings),
        )


def _child_main(conn: Connection, config: SlotConfig) -> None:
    from services.engine.slot_process import serve

    serve(conn, config)


class _Slot:
    """One child process and the pipe to it; used by one thread at a time."""

    def __init__(self, context: Any, config: SlotConfig, number: int) -> None:
        self._context = context
        self._config = config
        self._number = number
        self._process: Any = None
        self._conn: Connection | None = None
        self._seq = 0
        self.started = 0
        self.lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def ensure(self) -> Connection:
        if self._conn is not None and self._process is not None and self._process.is_alive():
            return self._conn
        self.kill()
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_child_main, args=(theirs, self._config), name=f"tubeflow-slot-{self._number}", daemon=True
        )
        process.start()
        theirs.close()
        self._process, self._conn = process, ours
        self.started += 1
        if not ours.poll(START_TIMEOUT):
            self.kill()
            raise MediaError("worker_unavailable", "a yt-dlp slot process did not start", transient=True)
        try:
            ours.recv()  # ("ready", pid)
        except (EOFError, OSError) as exc:
            self.kill()
            raise MediaError("worker_unavailable", "a yt-dlp slot process exited at start", transient=True) from exc
        return ours

    def kill(self) -> None:
        """Kill the child and everything it started (its own process group: ffmpeg included)."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                process.kill()
            except Exception:
                pass
            process.join(5)
        if conn is not None:
            conn.close()

    def call(
        self,
        kind: str,
        kwargs: dict[str, Any],
        *,
        token: CancelToken | None,
        timeout: float,
        live_timeout: float,
        hook: ProgressHook | None = None,
        reuse: Reuse | None = None,
    ) -> Any:
        conn = self.ensure()
        self._seq += 1
        seq = self._seq
        conn.send((kind, seq, kwargs))
        grace = DOWNLOAD_STOP_GRACE if kind == "download" else 0.0
        deadline = time.monotonic() + timeout
        stopping: tuple[float, str] | None = None
        while True:
            now = time.monotonic()
            if stopping is None and token is not None and token.reason is not None:
                stopping = (now, token.reason)
                self._send(("stop", seq, token.reason))
            if stopping is not None and now - stopping[0] >= grace:
                self.kill()
                raise Aborted(stopping[1])
            if now >= deadline:
                self.kill()
                setting = "TUBEFLOW_RESOLVE_TIMEOUT" if kind == "resolve" else "TUBEFLOW_DOWNLOAD_TIMEOUT"
                raise MediaError(f"{kind}_timeout", f"the {kind} took longer than {setting} ({timeout:g} s)")
            if not conn.poll(POLL):
                continue
            try:
                message = conn.recv()
            except (EOFError, OSError) as exc:
                code = self._process.exitcode if self._process is not None else None
                self.kill()
                raise MediaError(
                    "worker_crashed", f"the yt-dlp process running this {kind} died (exit code {code})", transient=True
                ) from exc
            what = message[0]
            if what == "hook" and hook is not None:
                try:
                    hook(message[1])
                except Aborted:
                    pass  # the token says so too: heard above, on the next turn
            elif what == "reuse":
                try:
                    found = reuse(message[1]) if reuse is not None else None
                except BaseException:
                    self.kill()
                    raise
                conn.send(("reused", seq, found))
            elif what == "live":
                deadline = max(deadline, now + live_timeout)
                grace = RECORDING_STOP_GRACE
            elif what == "done":
                return message[1]
            elif what == "failed":
                code, text, transient, step, retry_after = message[1]
                raise MediaError(code, text, transient=transient, step=step, retry_after=retry_after)
            elif what == "aborted":
                raise Aborted(message[1])

    def _send(self, message: tuple) -> None:
        try:
            if self._conn is not None:
                self._conn.send(message)
        except OSError:
            pass  # the child is gone; the next poll says so


class SlotPool:
    """The MediaTool the downloader uses: ``size`` slot processes, each running one call at a time."""

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
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["services.engine.preload"])
        self._slots = [_Slot(context, self.config, n) for n in range(1, size + 1)]
        self._idle: queue.LifoQueue[_Slot] = queue.LifoQueue()
        # Last in, first out: the slot used last (warm, started) is the next one taken; the rest start only when
        # that many calls run at once.
        for slot in reversed(self._slots):
            self._idle.put(slot)
        self._probes = Probes()
        self._closed = False

    @property
    def probes_reused(self) -> int:
        return self._probes.reused

    @property
    def processes_started(self) -> int:
        return sum(slot.started for slot in self._slots)

    def warm_up(self, slots: int = 1) -> None:
        """Start the fork server and ``slots`` slot processes now (blocking: run on a thread). The others start when
        first needed (~0.1 s each, forked from the warm fork server): an idle service keeps one."""
        for slot in self._slots[:slots]:
            with slot.lock:
                if not self._closed:
                    slot.ensure()

    def close(self) -> None:
        self._closed = True
        for slot in self._slots:
            slot.kill()

    def _run(self, kind: str, kwargs: dict[str, Any], *, retire: bool = False, **options: Any) -> Any:
        """One call in an idle slot; ``retire``: that slot's process ends after it (the next call forks a clean one)."""
        slot = self._idle.get()
        try:
            if self._closed:
                raise Aborted("shutdown")
            with slot.lock:
                try:
                    return slot.call(kind, kwargs, live_timeout=self.config.max_recording + 120.0, **options)
                finally:
                    if retire:
                        slot.kill()
        finally:
            self._idle.put(slot)

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
    ) -> Downloaded:
        """``probe``: what another process's resolve found (carried with the item), used when none is kept here."""
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
        }
        return self._run("download", kwargs, token=token, timeout=self.download_timeout, hook=hook, reuse=reuse)

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
            retire=True,
        )
