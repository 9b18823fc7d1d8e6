"""Prometheus metrics of every service, and the small health/metrics HTTP endpoint of the worker services."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

log = logging.getLogger("tubeflow.metrics")

JOBS = Gauge("tubeflow_jobs", "Jobs known to this API process, by status", ["status"])
IN_FLIGHT = Gauge("tubeflow_work_in_flight", "Downloads or extractions running in this process", ["service"])
DOWNLOADED_BYTES = Counter("tubeflow_downloaded_bytes_total", "Media bytes downloaded (reused files not counted)")
REUSED = Counter("tubeflow_reused_downloads_total", "Items completed from a file another job had downloaded")
REDELIVERIES = Counter("tubeflow_redeliveries_total", "Work messages delivered more than once", ["consumer"])
DEAD_LETTERS = Counter("tubeflow_dead_letters_total", "Messages sent to the dead-letter stream", ["consumer"])
EVENT_LAG = Gauge("tubeflow_projector_lag_events", "Events in the stream not yet folded by this projector")
EVENTS_FOLDED = Counter("tubeflow_events_folded_total", "Events folded into read models by this projector")
SSE_CLIENTS = Gauge("tubeflow_sse_clients", "Open SSE streams on this API process")


def render() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST


async def serve_health(host: str, port: int, ready: Callable[[], bool]) -> asyncio.AbstractServer:
    """GET /healthz (the process runs), /readyz (connected to NATS), /metrics (Prometheus)."""

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
                body = b'{"status":"ready"}' if ok else b'{"status":"unavailable","reason":"NATS is not connected"}'
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
