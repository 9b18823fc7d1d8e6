"""The address guard for programs that connect by themselves: a small HTTP proxy on loopback that every ffmpeg a
slot process starts is pointed at (``http_proxy`` in the slot's environment).

yt-dlp's own requests resolve names through the guarded ``getaddrinfo`` (``runtime.addresses``). But yt-dlp hands
some streams to ffmpeg (HLS it can't do natively, e.g. SAMPLE-AES; live streams we record), and ffmpeg resolves and
connects on its own: a manifest's keys and segments could point anywhere. ffmpeg honours ``http_proxy`` for http and
(through CONNECT) https, and its HLS/DASH demuxers open nothing but http(s), file and data URLs; its protocol
whitelist (set by ``ytdlp`` and ``recording``) refuses everything else. So every connection ffmpeg makes comes
here: the target is resolved and checked against the address policy, and the proxy connects to the very address it
checked (no second lookup to rebind). A refused target gets 403 and is remembered, so the failure says why.
"""

from __future__ import annotations

import logging
import select
import socket
import socketserver
import threading
import time
from collections import deque
from urllib.parse import urlsplit

from services.engine.upstream import Upstream
from services.runtime.addresses import AddressPolicy, ForbiddenAddress, resolve_checked

log = logging.getLogger("tubeflow.guard_proxy")

MAX_HEAD = 64 * 1024
HEAD_TIMEOUT = 30.0
CONNECT_TIMEOUT = 20.0
IDLE_TIMEOUT = 120.0
MAX_CONNECTIONS = 32
# The protocols ffmpeg may use for a network input; anything else (rtmp, rtsp, udp, file, ...) is refused by ffmpeg.
FFMPEG_PROTOCOLS = "http,https,tcp,tls,httpproxy,crypto,data"


class GuardProxy:
    """Started once per slot process; ``url`` goes into ``http_proxy``; ``refused_since`` says what was refused.

    One guard serves every lane of its process: a refusal is told to the call that fails after it (a call that
    fails while another lane's connection was refused could be told of that refusal too; both fail either way)."""

    def __init__(self, policy: AddressPolicy, upstream: Upstream | None = None) -> None:
        self.policy = policy
        # TUBEFLOW_PROXY: every checked connection goes on through it (see ``upstream``).
        self.upstream = upstream
        # (when, why), the latest few.
        self.refusals: deque[tuple[float, str]] = deque(maxlen=64)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        guard = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                if not guard._slots.acquire(blocking=False):
                    _reply(self.request, 503, "too many connections")
                    return
                try:
                    guard._serve(self.request)
                finally:
                    guard._slots.release()

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler, bind_and_activate=True)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="guard-proxy", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def refused_since(self, began: float) -> str | None:
        """The first refusal since ``began`` (a monotonic time), if any."""
        return next((why for when, why in list(self.refusals) if when >= began), None)

    def start(self) -> "GuardProxy":
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _open(self, results: list, absolute: bytes) -> socket.socket | None:
        """A connection for a checked destination: to it, or through the upstream proxy (a plain-HTTP request in
        absolute form to an http(s) proxy; else a tunnel to the very address checked)."""
        if self.upstream is None:
            return _connect(results)
        if absolute:
            return self.upstream.open()
        address, port = results[0][4][:2]
        return self.upstream.open_tunnel(address, port)

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(HEAD_TIMEOUT)
        read = _read_head(client)
        if read is None:
            return _reply(client, 400, "bad request")
        head, extra = read
        request_line, _, rest = head.partition(b"\r\n")
        try:
            method, target, version = request_line.decode("latin-1").split(" ", 2)
        except ValueError:
            return _reply(client, 400, "bad request line")
        absolute = b""  # the request as an http(s) upstream proxy takes it (absolute form)
        if method.upper() == "CONNECT":
            host, _, port_text = target.rpartition(":")
            forward = b""  # the tunnel's bytes (``extra``, if any came early) follow the 200 below
        else:
            parts = urlsplit(target)
            if parts.scheme != "http" or not parts.hostname:
                return _reply(client, 400, "only http:// targets or CONNECT")
            host, port_text = parts.hostname, str(parts.port or 80)
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            # One request per connection: with keep-alive the next request (to any host) would be relayed unchecked,
            # so the server is asked to close after its answer (found with TUBEFLOW_PROXY, issue 23).
            dropped = (b"proxy-", b"connection:", b"keep-alive:")
            kept = [line for line in rest.split(b"\r\n") if line and not line.lower().startswith(dropped)]
            headers = b"\r\n".join([*kept, b"Connection: close"])
            line = f"{method} {path} {version}".encode("latin-1")
            forward = b"\r\n".join(part for part in (line, headers) if part) + b"\r\n\r\n" + extra
            if self.upstream is not None and self.upstream.speaks_http:
                line = f"{method} {target} {version}".encode("latin-1")
                absolute = b"\r\n".join(part for part in (line, headers) if part) + b"\r\n"
                absolute += self.upstream.authorization() + b"\r\n" + extra
        host = host.strip("[]")
        if not host or not port_text.isdigit():
            return _reply(client, 400, "bad target")
        try:
            results = resolve_checked(self.policy, host, int(port_text))
        except ForbiddenAddress as exc:
            self.refusals.append((time.monotonic(), str(exc)))
            log.warning("refused a connection for ffmpeg: %s", exc)
            return _reply(client, 403, str(exc))
        except OSError as exc:
            return _reply(client, 502, f"cannot resolve {host}: {exc}")
        try:
            upstream = self._open(results, absolute)
        except OSError as exc:
            return _reply(client, 502, f"cannot connect to {host}: {exc}")
        if upstream is None:
            return _reply(client, 502, f"cannot connect to {host}")
        if absolute:
            forward = absolute
        with upstream:
            if forward:
                upstream.sendall(forward)
            else:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if extra:
                    upstream.sendall(extra)
            # A plain request's answer tells the client to close too, so it never sends a next request (to another
            # host) on this connection, where it would be relayed unchecked.
            _relay(client, upstream, closing_answer_from=upstream if forward else None)


def _read_head(client: socket.socket) -> tuple[bytes, bytes] | None:
    """The request head (without its blank line) and whatever came after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = client.recv(4096)
        except OSError:
            return None
        if not chunk or len(data) + len(chunk) > MAX_HEAD:
            return None
        data += chunk
    head, _, extra = data.partition(b"\r\n\r\n")
    return head, extra


def _connect(results: list) -> socket.socket | None:
    for family, kind, proto, _name, address in results:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(address)
            return sock
        except OSError:
            sock.close()
    return None


def _relay(a: socket.socket, b: socket.socket, closing_answer_from: socket.socket | None = None) -> None:
    a.setblocking(True)
    b.setblocking(True)
    peers = {a: b, b: a}
    head: bytes | None = b"" if closing_answer_from is not None else None
    while True:
        ready, _, _ = select.select(list(peers), [], [], IDLE_TIMEOUT)
        if not ready:
            return
        for sock in ready:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            if head is not None and sock is closing_answer_from:
                head += data
                if b"\r\n\r\n" not in head:
                    if len(head) > MAX_HEAD:
                        return
                    continue
                answer, _, body = head.partition(b"\r\n\r\n")
                data, head = _closing(answer) + b"\r\n\r\n" + body, None
            try:
                peers[sock].sendall(data)
            except OSError:
                return


def _closing(head: bytes) -> bytes:
    """An answer's head saying the connection closes after it."""
    dropped = (b"connection:", b"keep-alive:", b"proxy-connection:")
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(dropped)]
    return b"\r\n".join([*lines, b"Connection: close", b"Proxy-Connection: close"])


def _reply(client: socket.socket, status: int, text: str) -> None:
    body = text.encode("utf-8", "replace")[:1000]
    reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway", 503: "Service Unavailable"}[status]
    try:
        client.sendall(
            f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
            f"Content-Type: text/plain\r\n\r\n".encode()
            + body
        )
    except OSError:
        pass
