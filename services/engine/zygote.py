"""Where slot processes come from: a small process that has yt-dlp imported and its extractors' patterns compiled
(``preload``) and does one thing, fork a slot process when asked. It replaces multiprocessing's fork server, which
brought a resource tracker process along (~6 MiB PSS) and ran the service's main module again in every slot.

Not forked from the service itself: the service's pages, which a zygote forked from it would share at first, are
copied as the service writes to them (reference counts, its heap), and the zygote is left holding the originals
alone (measured: +58 MiB PSS for `tubeflow up` with a zygote forked at its start). A fresh process that only ever
imports yt-dlp and forks keeps its pages shared with its slots.

A request is one message on a Unix socket (``SOCK_SEQPACKET``): the slot's pickled ``SlotConfig``, and the slot's end
of its pipe to the service passed along (``SCM_RIGHTS``); the answer is the new process's pid. The slot's parent is
this process, which reaps it (``SIGCHLD`` ignored) and ends, taking its slots and their ffmpeg along (each slot's
process group is killed, and the slots have a parent-death signal), when the service's end of the socket closes,
however the service went. It also ends by itself once it has had no slot and no request for ``idle_seconds`` (the
pool ends its idle slots after as long): ``start_slot`` then starts a new one.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

START_TIMEOUT = 60.0
MAX_REQUEST = 1024 * 1024
_PID = struct.Struct("!q")


class Zygote:
    """The service's side of the socket: ``start`` asks for a slot process (thread-safe)."""

    def __init__(self, sock: socket.socket, process: subprocess.Popen) -> None:
        self._sock = sock
        self.pid = process.pid
        self._process = process
        self._lock = threading.Lock()

    @classmethod
    def spawn(cls, engine_path: str | None = None, idle_seconds: float = 0.0) -> "Zygote":
        """The zygote as a program of its own (``python -m services.engine.zygote FD IDLE``); ``engine_path``: a
        folder holding another yt-dlp, put first on its ``sys.path`` (an update installed at run time, services.
        engine.updates); ``idle_seconds``: how long it stays with no slot and no request (0: while the service
        runs)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = None
        if engine_path is not None:
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(p for p in (engine_path, os.environ.get("PYTHONPATH")) if p),
            }
        process = subprocess.Popen(
            [sys.executable, "-B", "-m", "services.engine.zygote", str(theirs.fileno()), repr(float(idle_seconds))],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            env=env,
        )
        theirs.close()
        ours.settimeout(START_TIMEOUT)
        try:
            ready = ours.recv(16)
        except OSError:
            ready = b""
        ours.settimeout(None)
        if ready != b"ready":
            process.kill()
            process.wait()
            ours.close()
            raise RuntimeError("the yt-dlp zygote did not start")
        return cls(ours, process)

    def start(self, config: Any, conn_fd: int) -> int:
        """A new slot process serving ``conn_fd`` (its end of the pipe; the caller closes its copy) with ``config``;
        its pid."""
        payload = pickle.dumps(config)
        with self._lock:
            socket.send_fds(self._sock, [payload], [conn_fd])
            answer = self._sock.recv(_PID.size)
        if len(answer) != _PID.size:
            raise OSError("the yt-dlp zygote is gone")
        return _PID.unpack(answer)[0]

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def ended(self, timeout: float) -> bool:
        """Whether the process is gone, or goes within ``timeout`` s (one ending as it was asked: idle)."""
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def close(self) -> None:
        """The zygote ends (and its slots with it)."""
        self._sock.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def _serve(sock: socket.socket, idle_seconds: float) -> None:  # pragma: no cover - runs in the zygote
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the terminal is the service's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # slots are reaped by the kernel
    slots: list[int] = []
    try:
        _fork_slots(sock, slots, idle_seconds)
    finally:
        # The service is gone: so are its slots and what they run. Each slot leads a process group of its own
        # with its ffmpeg in it; the slot's parent-death signal alone would leave an ffmpeg merging (issue 26).
        for pid in slots:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass


def _fork_slots(sock: socket.socket, slots: list[int], idle_seconds: float) -> None:  # pragma: no cover
    asked = time.monotonic()
    while True:
        if idle_seconds > 0:
            # Idle: no slot of ours lives and nothing was asked for ``idle_seconds``: this process ends (the service
            # starts another when it next needs one). Looked at every few seconds while it waits for a request.
            if not select.select([sock], [], [], min(5.0, idle_seconds / 4))[0]:
                slots[:] = [pid for pid in slots if _alive(pid)]
                if not slots and time.monotonic() - asked >= idle_seconds:
                    return
                continue
        try:
            payload, fds, _flags, _address = socket.recv_fds(sock, MAX_REQUEST, 1)
        except OSError:
            return
        if not payload:
            return  # the service is gone
        asked = time.monotonic()
        slots[:] = [pid for pid in slots if _alive(pid)]
        pid = os.fork()
        if pid == 0:
            try:
                sock.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # a slot waits for its own ffmpeg
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                from multiprocessing.connection import Connection

                from services.engine.slot_process import serve

                serve(Connection(fds[0]), pickle.loads(payload))
            finally:
                os._exit(0)
        slots.append(pid)
        for fd in fds:
            os.close(fd)
        try:
            sock.send(_PID.pack(pid))
        except OSError:
            return


def _alive(pid: int) -> bool:
    """Whether the process group ``pid`` still has a process (a slot, or an ffmpeg it left)."""
    try:
        os.killpg(pid, 0)
    except OSError:
        return False
    return True


# This process's zygotes, one per yt-dlp it runs (None: the bundled one) and idle time, each started when a pool
# first needs it. One replaced by an update stays until it is idle (or the process ends): slots forked from it may
# still be running.
_zygotes: dict[tuple[str | None, float], Zygote] = {}
_zygote_lock = threading.Lock()


def zygote(engine_path: str | None = None, idle_seconds: float = 0.0) -> Zygote:
    """This process's zygote for ``engine_path``, started if there is none or it has ended (idle)."""
    with _zygote_lock:
        found = _zygotes.get((engine_path, idle_seconds))
        if found is None or not found.alive:
            if found is not None:
                found.close()
            _zygotes[(engine_path, idle_seconds)] = found = Zygote.spawn(engine_path, idle_seconds)
        return found


def start_slot(config: Any, conn_fd: int) -> int:
    """A slot process forked for ``config`` (its ``engine_path`` and ``idle_seconds`` choose and keep the zygote):
    its pid. A zygote that ended as it was asked (idle) is replaced and asked again, once."""
    for attempt in (1, 2):
        found = zygote(config.engine_path, config.idle_seconds)
        try:
            return found.start(config, conn_fd)
        except OSError:
            if attempt == 2 or not found.ended(5.0):
                raise
    raise AssertionError("unreachable")


if __name__ == "__main__":  # pragma: no cover - `python -m services.engine.zygote FD`
    control = socket.socket(fileno=int(sys.argv[1]))
    import services.engine.preload  # noqa: F401

    control.send(b"ready")
    _serve(control, float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)
