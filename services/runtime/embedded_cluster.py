"""`tubeflow up --cluster N`: N nats-server processes on loopback forming one JetStream cluster, so a user can watch a
node die (and come back) on one machine. A node that exits is started again on the same ports and store after a few
seconds, and catches up with the others."""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.request
from pathlib import Path

from services.runtime.embedded import EmbeddedNats

log = logging.getLogger("tubeflow")

CLUSTER_SIZES = (3, 5)


def free_ports(count: int, host: str) -> list[int]:
    """``count`` distinct ports free on ``host`` right now (all held open together, so none is handed out twice)."""
    sockets = []
    try:
        for _ in range(count):
            held = socket.socket()
            held.bind((host, 0))
            sockets.append(held)
        return [held.getsockname()[1] for held in sockets]
    finally:
        for held in sockets:
            held.close()


class EmbeddedCluster:
    """``size`` nodes named n0, n1, … storing under ``store_dir/n<i>``; ``url`` is the comma list of all of them."""

    def __init__(
        self, store_dir: Path, size: int, *, host: str = "127.0.0.1", log_dir: Path | None = None, restart_after=5.0
    ) -> None:
        if size not in CLUSTER_SIZES:
            raise ValueError(f"a cluster has {' or '.join(map(str, CLUSTER_SIZES))} nodes, not {size}")
        self.store_dir, self.size, self.host, self.log_dir = Path(store_dir), size, host, log_dir
        self.restart_after = restart_after
        self.nodes: list[EmbeddedNats] = []
        self.monitors: list[int] = []
        self.url: str | None = None
        self._stopping = threading.Event()
        self._watchdog: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> str:
        ports = free_ports(3 * self.size, self.host)
        clients, routes, self.monitors = ports[: self.size], ports[self.size : 2 * self.size], ports[2 * self.size :]
        for i in range(self.size):
            others = ",".join(f"nats://{self.host}:{port}" for j, port in enumerate(routes) if j != i)
            args = ("-n", f"n{i}", "--cluster_name", "tubeflow-local", "--cluster", f"nats://{self.host}:{routes[i]}")
            self.nodes.append(
                EmbeddedNats(
                    self.store_dir / f"n{i}",
                    host=self.host,
                    port=clients[i],
                    log_file=self.log_dir / f"nats-n{i}.log" if self.log_dir else None,
                    extra_args=(*args, "--routes", others, "-m", str(self.monitors[i])),
                )
            )
        try:
            urls = [node.start(timeout) for node in self.nodes]
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        self.url = ",".join(urls)
        self._watchdog = threading.Thread(target=self._watch, name="nats-cluster-watchdog", daemon=True)
        self._watchdog.start()
        return self.url

    def healthy(self, i: int) -> bool:
        """Node ``i`` answers its monitoring port's /healthz: JetStream is up and it knows the cluster's leader."""
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.monitors[i]}/healthz", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(self.healthy(i) for i in range(self.size)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {self.size}-node NATS cluster was not ready within {timeout} s")
            time.sleep(0.2)

    def describe(self) -> list[str]:
        """A line per node: its name, process id, client URL and monitoring URL (/jsz shows who leads what)."""
        lines = []
        for i, node in enumerate(self.nodes):
            pid = node.process.pid if node.process else "-"
            lines.append(f"  n{i}  pid {pid}  {node.url}  monitor http://{self.host}:{self.monitors[i]}/jsz")
        return lines

    def _watch(self) -> None:
        while not self._stopping.wait(1.0):
            for i, node in enumerate(self.nodes):
                process = node.process
                if process is None or process.poll() is None:
                    continue
                log.warning(
                    "NATS node n%d exited (code %s): starting it again in %.0f s",
                    i,
                    process.returncode,
                    self.restart_after,
                )
                if self._stopping.wait(self.restart_after):
                    return
                node.stop()
                try:
                    node.start()
                except (OSError, RuntimeError, TimeoutError) as exc:
                    log.error("NATS node n%d did not start again: %s", i, exc)
                else:
                    log.info("NATS node n%d is back (pid %d); it catches up with the others", i, node.process.pid)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the watchdog, then every node at once (each is asked to stop, then waited for)."""
        self._stopping.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=self.restart_after + timeout)
        for node in self.nodes:
            node.terminate()
        for node in self.nodes:
            node.stop(timeout)

    def __enter__(self) -> "EmbeddedCluster":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
