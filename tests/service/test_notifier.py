"""The notifier's deliveries against one real NATS server and two loopback receivers: pending deliveries come from
an index kept from the bucket's writes (the bucket is never scanned), and a receiver that takes its time holds one
attempt, never the others."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from services.notifier.main import Notifier
from services.runtime.addresses import AddressPolicy, parse_networks
from services.runtime.clock import utcnow
from services.runtime.deliveries import Delivery
from services.runtime.nats import read_bucket, watch_bucket
from services.runtime.nats.topology import DELIVERIES_BUCKET, WEBHOOKS_BUCKET
from services.runtime.webhooks import Webhook, WebhookStore, new_id
from tests.support.receivers import Loopback


class Receiver:
    def __init__(self, delay: float) -> None:
        self.received: list[float] = []

        def handle(method: str, path: str, headers: dict, body: bytes) -> tuple[int, str, bytes]:
            time.sleep(delay)
            self.received.append(time.monotonic())
            return 204, "text/plain", b""

        self.server = Loopback(handle)
        self.url = f"{self.server.base}/hook"


async def test_a_slow_receiver_holds_one_attempt_and_never_the_others(fresh_nc):
    nats = fresh_nc
    js = nats.jetstream()
    hooks, records = WebhookStore(await js.key_value(WEBHOOKS_BUCKET)), await js.key_value(DELIVERIES_BUCKET)
    slow, fast = Receiver(delay=4.0), Receiver(delay=0.0)
    made = []
    for receiver in (slow, slow, fast):
        hook = Webhook(
            id=new_id(), url=receiver.url, events=["job.completed"], secret="s" * 16,
            created_at=utcnow() - timedelta(minutes=1),
        )  # fmt: skip
        await hooks.put(hook)
        made.append(hook)
    notifier = Notifier(hooks, records, AddressPolicy(False, parse_networks("127.0.0.0/8")))
    sub = await watch_bucket(
        nats, DELIVERIES_BUCKET, on_put=notifier.on_delivery, on_delete=notifier.on_delivery_deleted
    )
    for n, hook in enumerate(made):
        await notifier._record(hook.id, f"job{n}", f"d{n}", "job.completed", {"event": "job.completed"})
    stop = asyncio.Event()
    started = time.monotonic()
    running = asyncio.create_task(notifier.run(stop))
    try:
        while not fast.received:
            assert time.monotonic() - started < 3.0, "the fast receiver waited for the slow ones"
            await asyncio.sleep(0.05)
        assert not slow.received  # both slow attempts still under way, beside the fast one
        while len(slow.received) < 2:
            assert time.monotonic() - started < 10.0
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(running, 15)
        await sub.unsubscribe()
        slow.server.close()
        fast.server.close()
    stored = {Delivery.decode(v).id: Delivery.decode(v) for v in (await read_bucket(records)).values()}
    assert {d.status for d in stored.values()} == {"delivered"} and len(stored) == 3
    assert all(d.attempts == 1 for d in stored.values())


class Hostile:
    """A receiver that never finishes: ``trickle`` sends a header byte a second, ``endless`` a body that never ends.
    It counts the bytes the notifier let it send."""

    def __init__(self, kind: str) -> None:
        import socket
        import threading

        self.sent = 0
        self.connections = 0
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/hook"

        def serve(conn: socket.socket) -> None:
            with conn:
                conn.settimeout(0.5)
                try:
                    conn.recv(65536)
                    if kind == "trickle":
                        conn.sendall(b"HTTP/1.1 200 OK\r\n")
                        while not self._stop.wait(1.0):
                            conn.sendall(b"X")
                    else:
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
                        chunk = b"x" * 65536
                        while not self._stop.is_set() and self.sent < 256 * 1024 * 1024:
                            conn.sendall(chunk)
                            self.sent += len(chunk)
                except OSError:
                    pass

        def accept() -> None:
            while not self._stop.is_set():
                try:
                    conn, _ = self._listener.accept()
                except OSError:
                    continue
                self.connections += 1
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()


async def test_a_trickling_or_endless_receiver_is_bounded_and_never_holds_up_another(fresh_nc, monkeypatch):
    """Issue 23: a receiver trickling a header byte every 3 s held all 8 send slots (another webhook got 6-7 of 11
    deliveries in 40 s), and an endless body was read whole (128 MiB into the API's process)."""
    import services.notifier.main as notifier_main

    monkeypatch.setattr(notifier_main, "ATTEMPT_DEADLINE", 2.0)
    js = fresh_nc.jetstream()
    hooks, records = WebhookStore(await js.key_value(WEBHOOKS_BUCKET)), await js.key_value(DELIVERIES_BUCKET)
    trickle, endless, fast = Hostile("trickle"), Hostile("endless"), Receiver(delay=0.0)
    made = {}
    for name, url in (("trickle", trickle.url), ("endless", endless.url), ("fast", fast.url)):
        hook = Webhook(
            id=new_id(), url=url, events=["job.completed"], secret="s" * 16, created_at=utcnow() - timedelta(minutes=1)
        )
        await hooks.put(hook)
        made[name] = hook
    notifier = Notifier(hooks, records, AddressPolicy(False, parse_networks("127.0.0.0/8")))
    sub = await watch_bucket(
        fresh_nc, DELIVERIES_BUCKET, on_put=notifier.on_delivery, on_delete=notifier.on_delivery_deleted
    )
    for n in range(10):  # ten of each, the hostile ones first
        for name in ("trickle", "endless", "fast"):
            await notifier._record(made[name].id, f"job{n}", f"{name}{n}", "job.completed", {"event": "job.completed"})
    stop = asyncio.Event()
    started = time.monotonic()
    running = asyncio.create_task(notifier.run(stop))
    try:
        while len(fast.received) < 10:
            assert time.monotonic() - started < 8.0, f"the fast receiver got {len(fast.received)} of 10"
            await asyncio.sleep(0.05)
        # The trickler never held more than its share, and each of its attempts ended at the deadline.
        assert trickle.connections <= notifier_main.WEBHOOK_CONCURRENCY * 2
        await asyncio.sleep(2.5)
    finally:
        stop.set()
        await asyncio.wait_for(running, 15)
        await sub.unsubscribe()
        trickle.close()
        endless.close()
        fast.server.close()
    stored = [Delivery.decode(v) for v in (await read_bucket(records)).values()]
    by_hook = {name: [d for d in stored if d.webhook == hook.id] for name, hook in made.items()}
    assert {d.status for d in by_hook["fast"]} == {"delivered"}
    # The endless body was never read: the status was enough, and the receiver could send only what fits in buffers.
    # (Per connection, at most what the loopback's socket buffers hold: a few MiB, against 256 MiB on offer.)
    assert {d.status for d in by_hook["endless"]} == {"delivered"}
    assert endless.sent < endless.connections * 8 * 1024 * 1024, (endless.sent, endless.connections)
    tried = [d for d in by_hook["trickle"] if d.attempts]
    assert tried and all(d.status == "pending" and "no answer within 2 s" in (d.last_error or "") for d in tried)


class Redirecting:
    """A notification service on an allowed address that answers 302 to an inside one, or an endless body."""

    def __init__(self, host: str, answer) -> None:  # noqa: ANN001
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                outer.requests.append(self.path)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer(self)

            do_GET = do_POST = _any  # noqa: N815

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"{host}:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_apprise_follows_no_redirect_inside_and_reads_no_endless_answer(fresh_nc):
    """Issue 23: with TUBEFLOW_APPRISE_URLS=json://… answering 302 to an internal address, the internal server got
    one GET per finished job; Apprise now goes through the address policy on every hop, and reads a bounded answer."""
    from services.notifier.apprise_sender import AppriseSender

    inside = Redirecting("127.0.0.3", lambda h: (h.send_response(200), h.end_headers()))

    def redirect(handler) -> None:  # noqa: ANN001
        handler.send_response(302)
        handler.send_header("Location", f"http://{inside.base}/internal")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    sent = [0]

    def endless(handler) -> None:  # noqa: ANN001
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()
        try:
            while sent[0] < 256 * 1024 * 1024:
                handler.wfile.write(b" " * 65536)
                sent[0] += 65536
        except OSError:
            pass

    outside, talker = Redirecting("127.0.0.2", redirect), Redirecting("127.0.0.2", endless)
    records = await fresh_nc.jetstream().key_value(DELIVERIES_BUCKET)
    policy = AddressPolicy(False, parse_networks("127.0.0.2/32"))
    try:
        redirected = AppriseSender([f"json://{outside.base}/notify"], records, 0.0, policy)
        assert await redirected.send_once("job.completed:a:0", "done", "a job") is False
        assert outside.requests == ["/notify"] and inside.requests == []
        bounded = AppriseSender([f"json://{talker.base}/notify"], records, 0.0, policy)
        started = time.monotonic()
        await bounded.send_once("job.completed:b:0", "done", "a job")
        assert talker.requests == ["/notify"] and time.monotonic() - started < 20
        assert sent[0] < 32 * 1024 * 1024, sent[0]  # read up to the bound (1 MiB) and let go
    finally:
        for server in (inside, outside, talker):
            server.close()
