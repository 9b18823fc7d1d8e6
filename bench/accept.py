"""Accept latency: POST /api/jobs p50/p99 with 1 and 16 concurrent clients, against a raw JetStream publish round
trip on the same server, with an empty history and with 10,000 finished jobs in it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime, timezone

import httpx
import nats

from bench.harness import Report, metrics_snapshot, nats_server, summary_ms, tubeflow
from contracts import events as ev
from contracts.ids import new_job_id
from services.runtime.nats import EventPublisher, connect, ensure_topology
from tests.support.events import events_of


async def raw_publish(url: str, count: int) -> list[float]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="BENCH_RAW", subjects=["bench.raw.>"])
    samples = []
    for i in range(count):
        started = time.perf_counter()
        await js.publish(f"bench.raw.{i}", b'{"url":"http://video.example.com/v"}', headers={"Nats-Msg-Id": str(i)})
        samples.append(time.perf_counter() - started)
    await nc.close()
    return samples


async def post_jobs(
    base: str, count: int, concurrency: int, headers: dict | None = None, local_address: str | None = None
) -> list[float]:
    samples: list[float] = []
    queue = list(range(count))

    async def client_loop(client: httpx.AsyncClient) -> None:
        while queue:
            queue.pop()
            started = time.perf_counter()
            response = await client.post(f"{base}/api/jobs", json={"url": "http://video.example.com/watch?v=1"})
            samples.append(time.perf_counter() - started)
            assert response.status_code == 202, response.text

    transport = httpx.AsyncHTTPTransport(local_address=local_address) if local_address else None
    async with httpx.AsyncClient(
        timeout=30, limits=httpx.Limits(max_connections=concurrency), headers=headers or {}, transport=transport
    ) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    return samples


async def signed_in_session(url: str) -> str:
    """A signed-in (oidc) session written to the sessions bucket as a sign-in would: its cookie's value."""
    from services.api.identity import Identity
    from services.api.sessions import SessionBook
    from services.runtime.nats.topology import SESSIONS_BUCKET

    nc = await connect(url, "bench-session")
    js = nc.jetstream()
    await ensure_topology(js)
    book = SessionBook()
    book.kv = await js.key_value(SESSIONS_BUCKET)
    value, _ = await book.open(Identity("alice", "user", "oidc"))
    await nc.close()
    return value


async def personal_token(base: str) -> str:
    async with httpx.AsyncClient(timeout=30, headers={"Authorization": "Bearer bench-admin"}) as client:
        made = await client.post(f"{base}/api/tokens", json={"name": "bench", "user": "alice"})
        return made.json()["token"]


def auth_costs(count: int, rounds: int, report: Report, only: tuple[str, ...] = ()) -> None:
    """POST latency (1 client) in each auth mode against `none`: an API process per mode, all up at once on one NATS
    server (one projector), the requests interleaved one mode after the other, so that what else this noisy machine
    does meanwhile falls on every mode alike. ``rounds`` fresh sets of processes (process-to-process differences)."""
    modes = {
        "none": {},
        "token (TUBEFLOW_API_TOKEN)": {"TUBEFLOW_API_TOKEN": "bench-admin"},
        "token (a personal token)": {"TUBEFLOW_API_TOKEN": "bench-admin"},
        "forward (Remote-User from the proxy)": {
            "TUBEFLOW_AUTH": "forward",
            "TUBEFLOW_TRUSTED_PROXIES": "127.0.0.2/32",
        },
        "oidc (the session cookie)": {
            "TUBEFLOW_AUTH": "oidc",
            "TUBEFLOW_OIDC_ISSUER": "http://127.0.0.1:9",
            "TUBEFLOW_OIDC_CLIENT_ID": "bench",
        },
    }
    modes = {mode: env for mode, env in modes.items() if not only or mode.split()[0] in only}
    samples: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(rounds):
        with contextlib.ExitStack() as stack:
            server = stack.enter_context(nats_server())
            stack.enter_context(tubeflow(server.url, ["progress"]))
            apis = {mode: stack.enter_context(tubeflow(server.url, ["api"], env)) for mode, env in modes.items()}
            asyncio.run(_interleaved(server.url, apis, count, samples))
    base = summary_ms(samples["none"])
    for mode, taken in samples.items():
        stats = summary_ms(taken)
        report.add(
            what=f"POST /api/jobs, auth {mode}",
            clients=1,
            **stats,
            p50_vs_none=round(stats["p50_ms"] / base["p50_ms"], 2),
            p99_vs_none=round(stats["p99_ms"] / base["p99_ms"], 2),
        )
    report.notes.append(
        f"auth modes: {rounds} x {count} POSTs per mode, interleaved across an API process per mode; "
        "target <= 1.10x of none"
    )


async def _interleaved(nats_url: str, apis: dict, count: int, samples: dict[str, list[float]]) -> None:
    clients: dict[str, httpx.AsyncClient] = {}
    try:
        for mode, api in apis.items():
            headers, address = {}, None
            if mode.startswith("token (TUBEFLOW"):
                headers = {"Authorization": "Bearer bench-admin"}
            elif mode.startswith("token (a personal"):
                headers = {"Authorization": f"Bearer {await personal_token(api.base)}"}
            elif mode.startswith("forward"):
                headers, address = {"Remote-User": "alice"}, "127.0.0.2"
            elif mode.startswith("oidc"):
                headers = {"Cookie": f"tubeflow_session={await signed_in_session(nats_url)}", "Origin": api.base}
            transport = httpx.AsyncHTTPTransport(local_address=address) if address else None
            clients[mode] = httpx.AsyncClient(base_url=api.base, timeout=30, headers=headers, transport=transport)
        body = {"url": "http://video.example.com/watch?v=1"}
        for n in range(count + 50):  # the first 50 of each warm up
            for mode, client in clients.items():
                started = time.perf_counter()
                response = await client.post("/api/jobs", json=body)
                if n >= 50:
                    samples[mode].append(time.perf_counter() - started)
                assert response.status_code == 202, (mode, response.text)
    finally:
        for client in clients.values():
            await client.aclose()


async def finished_history(url: str, jobs: int, named=None) -> None:  # noqa: ANN001
    """``jobs`` completed single-video jobs, written as their events (requested ... download.completed);
    ``named(n)``: the n-th job's (URL, title), when they should differ."""
    nc = await connect(url, "bench-history")
    js = nc.jetstream()
    await ensure_topology(js)
    publisher = EventPublisher(js)
    now = datetime.now(timezone.utc)

    def job_events(job: str, n: int) -> list[ev.Envelope]:
        address, title = named(n) if named else ("http://video.example.com/v", None)
        steps = [
            ("requested", ev.Requested(url=address), None),
            ("resolved", ev.Resolved(kind="video", title=title, item_count=1, worker="w"), None),
            ("item.queued", ev.ItemQueued(index=1, url="u", mode="video", audio_format="mp3"), "0001"),
            ("download.started", ev.DownloadStarted(worker="w"), "0001"),
            ("download.completed", ev.DownloadCompleted(worker="w", file="f.mp4", size=1000), "0001"),
        ]
        return events_of(job, steps, start=now)

    pending: list[ev.Envelope] = []
    for n in range(jobs):
        pending += job_events(new_job_id(), n)
        if len(pending) >= 1000:
            await asyncio.gather(*(publisher.publish(e) for e in pending))
            pending = []
    await asyncio.gather(*(publisher.publish(e) for e in pending))
    await nc.close()


def wait_folded(base: str, completed: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    seen: dict = {}
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < deadline:
            seen = metrics_snapshot(client, base)
            if seen.get('tubeflow_jobs{status="completed"}', 0) >= completed:
                return
            time.sleep(0.2)
    jobs = {k: v for k, v in seen.items() if k.startswith("tubeflow_jobs")}
    raise TimeoutError(f"{completed} completed jobs were not folded within {timeout} s; the API at {base} said {jobs}")


def run(quick: bool) -> Report:
    count = 100 if quick else 2000
    history = 500 if quick else 10_000
    report = Report("accept")
    p99: dict[tuple[int, int], float] = {}
    with nats_server() as server:
        raw = asyncio.run(raw_publish(server.url, count))
        raw_summary = summary_ms(raw)
    report.add(what="raw JetStream publish (baseline)", clients=1, **raw_summary)
    for finished in (0, history):
        with nats_server() as server:
            if finished:
                asyncio.run(finished_history(server.url, finished))
            with tubeflow(server.url, ["api", "progress"]) as api:
                wait_folded(api.base, finished)
                for concurrency in (1, 16):
                    stats = summary_ms(asyncio.run(post_jobs(api.base, count, concurrency)))
                    p99[(finished, concurrency)] = stats["p99_ms"]
                    report.add(
                        what="POST /api/jobs",
                        finished_jobs=finished,
                        clients=concurrency,
                        **stats,
                        p99_vs_raw=round(stats["p99_ms"] / raw_summary["p99_ms"], 2),
                    )
    for concurrency in (1, 16):
        report.add(
            what=f"p99 with {history} finished jobs / with none",
            clients=concurrency,
            ratio=round(p99[(history, concurrency)] / p99[(0, concurrency)], 2),
        )
    auth_costs(count // 4, 1 if quick else 4, report)
    report.notes.append("targets: p99 <= 8 ms here; unchanged (+-10 %) with 10,000 finished jobs in history")
    report.notes.append(
        "API and projector run (accepted jobs are folded, not fetched); the load generator shares the cores"
    )
    return report
