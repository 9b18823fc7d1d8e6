"""The operator's proxy (TUBEFLOW_PROXY) behind the guard proxy: the guard checks every destination against the
address policy and then asks the upstream proxy for a tunnel to the very address it checked (an IP literal: the
proxy resolves nothing, so a name can't be rebound to an inside address between the check and the connection).

Before (issue 23), with TUBEFLOW_PROXY set the policy was off: a redirect to a forbidden address was asked of the
proxy. http://, https:// (TLS to the proxy), socks4(a):// and socks5(h):// proxies, with user:password for http(s)
and socks5. A plain-HTTP request to an http(s) proxy goes in absolute form with its host name (checked just before;
the proxy resolves it again). Names must resolve here: one that does not is refused, not handed to the proxy (set
TUBEFLOW_ALLOW_PRIVATE_URLS=true to trust the proxy with every name and address instead)."""

from __future__ import annotations

import base64
import ipaddress
import socket
import ssl
import struct
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from services.runtime.addresses import PROXY_SCHEMES

SCHEMES = PROXY_SCHEMES
CONNECT_TIMEOUT = 20.0
MAX_HEAD = 64 * 1024


class UpstreamError(OSError):
    """The upstream proxy could not be reached or refused the tunnel."""


@dataclass(frozen=True)
class Upstream:
    scheme: str
    host: str
    port: int
    user: str | None = None
    password: str | None = None

    @staticmethod
    def parse(url: str) -> "Upstream":
        """ValueError naming what is wrong (checked when a slot starts)."""
        parts = urlsplit(url if "://" in url else f"http://{url}")
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise ValueError(f"TUBEFLOW_PROXY: {scheme}:// is not one of {', '.join(SCHEMES)}")
        if not parts.hostname:
            raise ValueError("TUBEFLOW_PROXY: no host")
        default = {"http": 80, "https": 443}.get(scheme, 1080)
        return Upstream(
            scheme,
            parts.hostname,
            parts.port or default,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
        )

    @property
    def speaks_http(self) -> bool:
        return self.scheme in ("http", "https")

    def authorization(self) -> bytes:
        """The Proxy-Authorization header line (with its CRLF) for an http(s) proxy, or nothing."""
        if self.user is None:
            return b""
        token = base64.b64encode(f"{self.user}:{self.password or ''}".encode()).decode()
        return f"Proxy-Authorization: Basic {token}\r\n".encode()

    def open(self) -> socket.socket:
        """A connection to the proxy itself (TLS for https://), for a plain-HTTP request in absolute form."""
        sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
        if self.scheme == "https":
            try:
                return ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        return sock

    def open_tunnel(self, address: str, port: int) -> socket.socket:
        """A socket through the proxy to ``address`` (an IP literal) and ``port``, ready for the client's bytes."""
        sock = self.open()
        try:
            if self.speaks_http:
                self._http_connect(sock, address, port)
            elif self.scheme.startswith("socks5"):
                self._socks5(sock, address, port)
            else:
                self._socks4(sock, address, port)
        except BaseException:
            sock.close()
            raise
        return sock

    def _http_connect(self, sock: socket.socket, address: str, port: int) -> None:
        host = f"[{address}]" if ":" in address else address
        sock.sendall(
            f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n".encode() + self.authorization() + b"\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk or len(head) > MAX_HEAD:
                raise UpstreamError("the proxy closed the connection")
            head += chunk
        line = head.split(b"\r\n", 1)[0]
        status = line.split(b" ")
        if len(status) < 2 or not status[1].startswith(b"2"):
            raise UpstreamError(f"the proxy refused the tunnel: {line.decode(errors='replace')[:200]}")
        if head.partition(b"\r\n\r\n")[2]:
            raise UpstreamError("the proxy sent bytes before the tunnel opened")

    def _socks5(self, sock: socket.socket, address: str, port: int) -> None:
        methods = b"\x00\x02" if self.user is not None else b"\x00"
        sock.sendall(b"\x05" + bytes([len(methods)]) + methods)
        version, method = _exactly(sock, 2)
        if version != 5 or method == 0xFF:
            raise UpstreamError("the SOCKS5 proxy accepts none of our methods")
        if method == 2:
            user, password = (self.user or "").encode(), (self.password or "").encode()
            sock.sendall(b"\x01" + bytes([len(user)]) + user + bytes([len(password)]) + password)
            if _exactly(sock, 2)[1] != 0:
                raise UpstreamError("the SOCKS5 proxy refused the user and password")
        ip = ipaddress.ip_address(address)
        kind = b"\x01" if ip.version == 4 else b"\x04"
        sock.sendall(b"\x05\x01\x00" + kind + ip.packed + struct.pack(">H", port))
        reply = _exactly(sock, 4)
        if reply[1] != 0:
            raise UpstreamError(f"the SOCKS5 proxy refused the connection (reply {reply[1]})")
        rest = {1: 4, 4: 16}.get(reply[3])
        if rest is None:
            rest = _exactly(sock, 1)[0]  # a name: its length first
        _exactly(sock, rest + 2)

    def _socks4(self, sock: socket.socket, address: str, port: int) -> None:
        ip = ipaddress.ip_address(address)
        if ip.version != 4:
            raise UpstreamError("a SOCKS4 proxy can't reach an IPv6 address")
        sock.sendall(b"\x04\x01" + struct.pack(">H", port) + ip.packed + (self.user or "").encode() + b"\x00")
        if _exactly(sock, 8)[1] != 0x5A:
            raise UpstreamError("the SOCKS4 proxy refused the connection")


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise UpstreamError("the proxy closed the connection")
        data += chunk
    return data
