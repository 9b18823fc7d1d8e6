"""What the benchmarks share: a private NATS server, local media, tubeflow processes, timing and reporting."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx

from services.runtime.embedded import EmbeddedNats
from tests.conftest import free_port, spawn_cli, wait_ready
from tests.support.media import MediaServer, make_clip, make_dash, make_source
from tests.support.processes import stop_all  # noqa: F401 - the benchmarks' name for it


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary_ms(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(1000 * percentile(values, 50), 3),
        "p99_ms": round(1000 * percentile(values, 99), 3),
        "mean_ms": round(1000 * statistics.fmean(values), 3) if values else float("nan"),
        "n": len(values),
    }


def process_tree(pid: int) -> list[int]:
    """A process and all of its descendants (the downloader's slot processes are its grandchildren)."""
    pids, index = [pid], 0
    while index < len(pids):
        # A child is listed under the thread that started it (the fork server is started from a worker thread).
        for task in Path(f"/proc/{pids[index]}/task").glob("*"):
            try:
                pids += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
        index += 1
    return pids


def _status_kib(pid: int, path: str, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants, from /proc (pages shared by forked processes are
    counted once per process: an upper bound)."""
    return round(sum(_status_kib(p, "status", "VmRSS:") for p in process_tree(pid)) / 1024, 1)


def pss_mib(pid: int) -> float:
    """Proportional set size of the same tree: shared pages divided among the processes sharing them."""
    return round(sum(_status_kib(p, "smaps_rollup", "Pss:") for p in process_tree(pid)) / 1024, 1)


def metrics_snapshot(client: httpx.Client, base: str) -> dict[str, float]:
    """Every sample of the API's /metrics at one instant, keyed by the series as printed (name and labels)."""
    samples = {}
    for line in client.get(f"{base}/metrics").text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            samples[series] = float(value)
    return samples


@dataclass
class Report:
    name: str
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, **row: object) -> None:
        self.rows.append(row)

    def print(self) -> None:
        print(f"\n== {self.name}")
        if self.rows:
            keys = list(dict.fromkeys(k for row in self.rows for k in row))
            widths = {k: max(len(k), *(len(str(row.get(k, ""))) for row in self.rows)) for k in keys}
            print("  ".join(k.ljust(widths[k]) for k in keys))
            for row in self.rows:
                print("  ".join(str(row.get(k, "")).ljust(widths[k]) for k in keys))
        for note in self.notes:
            print(f"  note: {note}")

    def save(self, path: str | None) -> None:
        if path:
            Path(path).write_text(
                json.dumps({"benchmark": self.name, "rows": self.rows, "notes": self.notes}, indent=2)
            )


@contextmanager
def nats_server() -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(Path(tempfile.mkdtemp(prefix="bench-nats-")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def media_server() -> Iterator[MediaServer]:
    root = Path(tempfile.mkdtemp(prefix="bench-media-"))
    make_clip(root / "clip.mp4", seconds=20, size="640x360", bitrate="500k")
    make_dash(make_source(root / "source.mp4", seconds=20, size="640x360", bitrate="500k"), root / "dash")
    with MediaServer(root) as server:
        yield server


@dataclass
class Processes:
    base: str
    processes: list[subprocess.Popen]
    data_dir: Path

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]


@contextmanager
def tubeflow(
    nats_url: str, services: list[str], env: dict[str, str] | None = None, checkout: Path | None = None
) -> Iterator[Processes]:
    """`tubeflow up` (services == ["up"]) or separate `tubeflow service` processes, stopped at the end; from
    ``checkout`` instead of this one (another revision, for a before/after in one run)."""
    data_dir = Path(tempfile.mkdtemp(prefix="bench-data-"))
    port = free_port()
    full_env = {
        **os.environ,
        "TUBEFLOW_NATS_URL": nats_url,
        "TUBEFLOW_DATA_DIR": str(data_dir),
        "TUBEFLOW_ALLOWED_NETWORKS": "127.0.0.0/8",
        "TUBEFLOW_RATE_LIMIT": "0",
        **(env or {}),
    }
    log = data_dir / "services.log"
    processes = []
    for service in services:
        if service == "up":
            args = ["up", "--port", str(port), "--data-dir", str(data_dir)]
        elif service == "api":
            args = ["service", "api", "--port", str(port)]
        else:
            args = ["service", service]
        processes.append(spawn_cli(*args, env=full_env, log=log, **({"cwd": checkout} if checkout else {})))
    base = f"http://127.0.0.1:{port}"
    try:
        if "api" in services or "up" in services:
            wait_ready(base, timeout=60)
        yield Processes(base, processes, data_dir)
    finally:
        stop_all(processes)


TERMINAL = ("completed", "partial", "failed", "cancelled")


class FinishedJobs:
    """Follows `GET /api/jobs/stream` on a thread and records each job's first terminal summary, as a dashboard
    would learn of it (polling every job's GET instead would load the API with the measurement itself)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.finished: dict[str, dict] = {}
        self.changed = threading.Condition()
        self.connected = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()
        if not self.connected.wait(30):
            raise TimeoutError("the jobs stream did not open")

    def _follow(self) -> None:
        try:
            self._read()
        except httpx.HTTPError:
            if not self._stop:
                raise

    def _read(self) -> None:
        with httpx.Client(timeout=httpx.Timeout(10, read=None)) as client:
            with client.stream("GET", f"{self.base}/api/jobs/stream", params={"limit": 0}) as response:
                self.connected.set()
                data: list[str] = []
                for line in response.iter_lines():
                    if self._stop:
                        return
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif line == "" and data:
                        view = json.loads("\n".join(data))
                        data = []
                        if view.get("status") in TERMINAL:
                            with self.changed:
                                self.finished.setdefault(view["id"], view)
                                self.changed.notify_all()

    def wait(self, job_ids: list[str], timeout: float = 600) -> dict[str, dict]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not all(job in self.finished for job in job_ids):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = sum(job not in self.finished for job in job_ids)
                    raise TimeoutError(f"{missing} job(s) not finished")
                self.changed.wait(left)
            return {job: self.finished[job] for job in job_ids}

    def post_all(self, urls: list[str], timeout: float = 600, **fields: object) -> tuple[float, dict[str, dict]]:
        """One job per URL, sent at once (``fields`` added to each); the time to the last finished, and their
        terminal views."""
        with httpx.Client(base_url=self.base, timeout=30) as client:
            started = time.perf_counter()
            ids = [client.post("/api/jobs", json={"url": url, **fields}).json()["id"] for url in urls]
            views = self.wait(ids, timeout=timeout)
            return time.perf_counter() - started, views

    def close(self) -> None:
        # The stream thread is a daemon blocked on a read; it ends with the stack's process.
        self._stop = True
