"""Prometheus metrics of every service, and the small health/metrics HTTP endpoint of the worker services."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections import deque
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger("tubeflow.metrics")

JOBS = Gauge("tubeflow_jobs", "Jobs known to this API process, by status", ["status"])
IN_FLIGHT = Gauge("tubeflow_work_in_flight", "Downloads or extractions running in this process", ["service"])
DOWNLOADED_BYTES = Counter("tubeflow_downloaded_bytes_total", "Media bytes downloaded (reused files not counted)")
REUSED = Counter("tubeflow_reused_downloads_total", "Items completed from a file another job had downloaded")
REDELIVERIES = Counter("tubeflow_redeliveries_total", "Work messages delivered more than once", ["consumer"])
DEAD_LETTERS = Counter("tubeflow_dead_letters_total", "Messages sent to the dead-letter stream", ["consumer"])
NOTIFICATIONS = Counter(
    "tubeflow_notifications_total", "Apprise notifications sent, by outcome (sent, failed)", ["outcome"]
)
EVENT_LAG = Gauge("tubeflow_projector_lag_events", "Events in the stream not yet folded by this projector")
EVENTS_FOLDED = Counter("tubeflow_events_folded_total", "Events folded into read models by this projector")
SSE_CLIENTS = Gauge("tubeflow_sse_clients", "Open SSE streams on this API process")
LOOP_LAG = Histogram(
    "tubeflow_event_loop_lag_seconds",
    "How late the event loop woke a timer: time the loop was busy while something waited",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
)
LOOP_LAG_MAX = Gauge("tubeflow_event_loop_lag_max_seconds", "Largest event-loop lag seen in the last 10 s")


def freeze_startup_objects() -> None:
    """Move everything made so far (modules, schemas, the loaded read models) out of the garbage collector's reach.

    A full collection walks every long-lived object: in a running `tubeflow up` that paused the event loop for up to
    90 ms (measured with gc.callbacks against the loop-lag monitor). Objects made at start-up live as long as the
    process, so they need not be walked again. Collections are also made rarer (``GC_THRESHOLDS``).
    """
    gc.collect()
    gc.freeze()
    # Collect the young generation every 20,000 allocations instead of 700: 1,000 SSE clients connecting at once
    # made collections that delayed the next update by 340 ms; with these, 140 ms (bench/fanout.py, same run).
    gc.set_threshold(*GC_THRESHOLDS)


GC_THRESHOLDS = (20_000, 20, 20)


class LoopLagMonitor:
    """Sleeps ``interval`` seconds again and again and records how late each wake-up is.

    A handler that blocks the loop for 30 ms makes a wake-up up to 30 ms late; every SSE client, HTTP request and
    NATS callback of the process waited that long too.
    """

    def __init__(self, interval: float = 0.02, window: float = 10.0) -> None:
        self.interval = interval
        self.window = window
        self._recent: deque[tuple[float, float]] = deque()
        self._task: asyncio.Task[None] | None = None
        self.max_lag = 0.0

    def start(self) -> "LoopLagMonitor":
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag-monitor")
        return self

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def record(self, lag: float, now: float) -> None:
        LOOP_LAG.observe(lag)
        self.max_lag = max(self.max_lag, lag)
        recent = self._recent
        # Keep a decreasing run of (time, lag): the head is the window's maximum.
        while recent and recent[-1][1] <= lag:
            recent.pop()
        recent.append((now, lag))
        while recent[0][0] < now - self.window:
            recent.popleft()
        LOOP_LAG_MAX.set(recent[0][1])

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self.interval)
            now = loop.time()
            self.record(max(0.0, now - started - self.interval), time.monotonic())


POT_PROVIDER_UP = Gauge(
    "tubeflow_pot_provider_up", "1 when the PO-token provider (TUBEFLOW_POT_PROVIDER_URL) answered its last ping"
)


def render() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST


async def serve_health(
    host: str, port: int, ready: Callable[[], bool], details: Callable[[], dict] | None = None
) -> asyncio.AbstractServer:
    """GET /healthz (the process runs), /readyz (connected to NATS; ``details`` adds what the service reports without
    failing on it, e.g. the PO-token provider), /metrics (Prometheus)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while await asyncio.wait_for(reader.readline(), 5) not in (b"\r\n", b"\n", b""):
                pass  # headers: nothing here needs them
            parts = request.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else ""
            if path == "/healthz":
                status, body, kind = 200, b'{"status":"ok"}', "application/json"
            elif path == "/readyz":
                ok = ready()
                status = 200 if ok else 503
                answer = {"status": "ready"} if ok else {"status": "unavailable", "reason": "NATS is not connected"}
                body = json.dumps({**answer, **(details() if details is not None else {})}).encode()
                kind = "application/json"
            elif path == "/metrics":
                body, kind = render()
                status = 200
            else:
                status, body, kind = 404, b'{"status":"not found"}', "application/json"
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host=host, port=port)
    log.info("health and metrics on http://%s:%d", host, port)
    return server
