"""What tests and benchmarks do with the processes they start and the states they wait for."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable


def run_cli(*args: str, timeout: float = 90, **kwargs: Any) -> subprocess.CompletedProcess:
    """`tubeflow ARGS` (this interpreter), its output captured; it dies with the test process, so a run stopped
    midway (Ctrl-C, a CI job cancelled) leaves no `tubeflow get` following a stack that is gone."""
    from services.cli.up import _die_with_parent

    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        **kwargs,
    )


def stop_all(processes: list[subprocess.Popen], grace: float = 30.0) -> None:
    """SIGTERM to every process still running, all at once, then wait; one still running after ``grace`` is killed."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(check: Callable[[], Any], timeout: float, what: str, explain: Callable[[], str] = lambda: "") -> Any:
    """``check()``'s first true value, asked every 0.1 s; an AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {explain()}"
        time.sleep(0.1)


def processes_mentioning(text: str, program: str | None = None) -> list[int]:
    """The pids of processes whose command line contains ``text`` (and whose program's name contains ``program``:
    imageio-ffmpeg's is ``ffmpeg-linux-x86_64-v…``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if program is not None and program not in Path(command[0].decode(errors="replace")).name:
            continue
        if text in b" ".join(command).decode(errors="replace"):
            found.append(int(entry.name))
    return found


def finished_job(base: str, job: str, timeout: float = 90) -> dict:
    """Job ``job``'s view once it is completed, failed or cancelled; on a timeout, its status and last events."""
    import httpx

    def done() -> dict | None:
        view = httpx.get(f"{base}/api/jobs/{job}", timeout=10).json()
        return view if view["status"] in ("completed", "failed", "cancelled") else None

    def explain() -> str:
        view = httpx.get(f"{base}/api/jobs/{job}", timeout=10).json()
        events = httpx.get(f"{base}/api/jobs/{job}/events", timeout=10).json()
        return f"status {view['status']}, last events {[(e['type'], e.get('data')) for e in events[-6:]]}"

    return wait_for(done, timeout, f"job {job} finished", explain)
