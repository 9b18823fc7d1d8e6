"""A local HTTPS server that records every TLS ClientHello it is sent (cipher suites, extensions, ALPN) before it
answers, serving files from a folder (and ``/redirect?to=URL``): what an impersonated request looks like on the wire.

Its certificate is made by trustme for the test; clients are told not to verify it."""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import trustme

# RFC 8701: the values browsers sprinkle into their lists so servers tolerate unknown ones (0x0a0a, 0x1a1a, …).
GREASE = frozenset((n << 12) | (0xA << 8) | (n << 4) | 0xA for n in range(16))


@dataclass(frozen=True)
class ClientHello:
    ciphers: tuple[int, ...]
    extensions: tuple[int, ...]
    alpn: tuple[str, ...]

    @property
    def greased(self) -> bool:
        return any(c in GREASE for c in self.ciphers) or any(e in GREASE for e in self.extensions)


def parse_client_hello(data: bytes) -> ClientHello | None:
    """The ClientHello in the first TLS record of a connection, or None if ``data`` holds no complete one."""
    if len(data) < 5 or data[0] != 22:
        return None
    length = int.from_bytes(data[3:5], "big")
    if len(data) < 5 + length:
        return None
    hello = data[5 : 5 + length]
    if hello[0] != 1:
        return None
    at = 4 + 2 + 32  # handshake header, client version, random
    at += 1 + hello[at]  # session id
    cipher_bytes = int.from_bytes(hello[at : at + 2], "big")
    ciphers = tuple(int.from_bytes(hello[i : i + 2], "big") for i in range(at + 2, at + 2 + cipher_bytes, 2))
    at += 2 + cipher_bytes
    at += 1 + hello[at]  # compression methods
    end = at + 2 + int.from_bytes(hello[at : at + 2], "big")
    at += 2
    extensions, alpn = [], []
    while at + 4 <= end:
        kind, size = int.from_bytes(hello[at : at + 2], "big"), int.from_bytes(hello[at + 2 : at + 4], "big")
        body = hello[at + 4 : at + 4 + size]
        extensions.append(kind)
        if kind == 16:  # application_layer_protocol_negotiation
            i = 2
            while i < len(body):
                alpn.append(body[i + 1 : i + 1 + body[i]].decode("ascii", "replace"))
                i += 1 + body[i]
        at += 4 + size
    return ClientHello(ciphers, tuple(extensions), tuple(alpn))


class TlsMediaServer:
    def __init__(self, root: Path, host: str = "127.0.0.1", names: tuple[str, ...] = ()) -> None:
        self.root = root
        self.host = host
        self.hellos: list[ClientHello] = []
        self.requests: list[str] = []
        self.connections = 0
        authority = trustme.CA()
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        authority.issue_cert(host, *names).configure_cert(self._context)
        self._context.set_alpn_protocols(["http/1.1"])
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def base(self) -> str:
        return f"https://{self.host}:{self.port}"

    def url(self, name: str, host: str | None = None) -> str:
        return f"https://{host or self.host}:{self.port}/{name}"

    def __enter__(self) -> "TlsMediaServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            seen = b""
            for _ in range(50):  # the hello may arrive in several segments: peek until it is whole
                seen = conn.recv(65536, socket.MSG_PEEK)
                hello = parse_client_hello(seen)
                if hello is not None:
                    self.hellos.append(hello)
                    break
                if not seen:
                    return
            with self._context.wrap_socket(conn, server_side=True) as tls:
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = tls.recv(65536)
                    if not chunk:
                        return
                    head += chunk
                target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
                self.requests.append(target)
                tls.sendall(self._answer(target))
        except (OSError, ssl.SSLError, IndexError):
            pass
        finally:
            conn.close()

    def _answer(self, target: str) -> bytes:
        parts = urlsplit(target)
        if parts.path == "/redirect":
            to = parse_qs(parts.query)["to"][0]
            return f"HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        path = (self.root / unquote(parts.path).lstrip("/")).resolve()
        if not path.is_file() or self.root.resolve() not in path.parents:
            return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        body = path.read_bytes()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        return head.encode() + body
