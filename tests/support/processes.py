"""What tests and benchmarks do with the processes they start and the states they wait for."""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Any, Callable


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
