"""Which addresses tubeflow may fetch from, checked twice: at POST for literal hosts, and in the downloader for every
name yt-dlp resolves (redirects and playlist entries included), so a hostname can't smuggle a private address in."""

from __future__ import annotations

import ipaddress
import socket
from contextvars import ContextVar
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# The proxies TUBEFLOW_PROXY may name: the guard proxy goes on through these (services.engine.upstream).
PROXY_SCHEMES = ("http", "https", "socks4", "socks4a", "socks5", "socks5h")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _literal_address(host: str) -> Address | None:
    host = host.strip("[]")
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        # inet_aton accepts the legacy spellings browsers and libcurl also accept: 2130706433, 0x7f.1, 0177.0.0.1
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except (OSError, ValueError):
            return None
    return _unmapped(address)


def _unmapped(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_networks(text: str | None) -> tuple[Network, ...]:
    if not text:
        return ()
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class AddressPolicy:
    """``allowed_networks`` set: only those. Else ``allow_private``: anything. Else: public unicast addresses only."""

    allow_private: bool = False
    allowed_networks: tuple[Network, ...] = field(default_factory=tuple)
    # (host, port) pairs reachable whatever the rules: only ever set for the requests to one service the operator
    # named (the PO-token provider, see services.engine.realsites), never for a job's.
    exempt: frozenset[tuple[str, int]] = frozenset()

    @property
    def open(self) -> bool:
        return self.allow_private and not self.allowed_networks

    def exempts(self, host: object, port: object) -> bool:
        if not self.exempt or not isinstance(host, str):
            return False
        try:
            return (host.rstrip(".").lower(), int(port)) in self.exempt  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return False

    def address_reason(self, address: Address) -> str | None:
        address = _unmapped(address)
        if self.allowed_networks:
            if any(address in network for network in self.allowed_networks):
                return None
            return f"{address} is outside TUBEFLOW_ALLOWED_NETWORKS"
        if self.allow_private:
            return None
        if not address.is_global or address.is_multicast or address.is_reserved or address.is_unspecified:
            return f"{address} is not a public address"
        return None

    def url_reason(self, url: str) -> str | None:
        """Why this URL's host is refused before anything is fetched, or None (hostnames are checked on resolve)."""
        if self.open:
            return None
        try:
            host = (urlsplit(url).hostname or "").rstrip(".").lower()
        except ValueError:
            return None
        if host == "localhost" or host.endswith(".localhost"):
            return self.address_reason(ipaddress.IPv4Address("127.0.0.1")) and f"{host} is a loopback name"
        address = _literal_address(host)
        return None if address is None else self.address_reason(address)


class ForbiddenAddress(OSError):
    """Raised instead of connecting: the name resolved to an address the policy refuses."""


# A context variable, not a thread-local: libraries that hand their requests to worker threads with a copy of the
# caller's context (Apprise does) stay guarded there; a plain new thread starts unguarded, as before.
_guarded: ContextVar[AddressPolicy | None] = ContextVar("tubeflow_address_policy", default=None)
_real_getaddrinfo = socket.getaddrinfo


def check_results(policy: AddressPolicy, host: object, results: list) -> list:  # noqa: ANN001 - getaddrinfo's
    """getaddrinfo's ``results`` for ``host``, or ForbiddenAddress if any of them is outside the policy."""
    if not policy.open:
        for result in results:
            try:
                address = ipaddress.ip_address(result[4][0].split("%", 1)[0])
            except ValueError:
                continue
            reason = policy.address_reason(address)
            if reason:
                raise ForbiddenAddress(f"forbidden_address: {host} resolves to {reason}")
    return results


def resolve_checked(policy: AddressPolicy, host: str, port: int) -> list:
    """Resolve ``host`` for a TCP connection and check every address (for code that connects by itself)."""
    results = _real_getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return results if policy.exempts(host, port) else check_results(policy, host, results)


def _checked_getaddrinfo(host, *args, **kwargs):  # noqa: ANN001, ANN202 - same signature as socket.getaddrinfo
    results = _real_getaddrinfo(host, *args, **kwargs)
    policy = _guarded.get()
    if policy is None or policy.exempts(host, args[0] if args else kwargs.get("port")):
        return results
    return check_results(policy, host, results)


def install_guard() -> None:
    """Route name resolution through the policy check; it applies only on threads inside ``guarded``."""
    socket.getaddrinfo = _checked_getaddrinfo


class guarded:  # noqa: N801 - used as a context manager
    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy

    def __enter__(self) -> None:
        install_guard()
        self._token = _guarded.set(self._policy)

    def __exit__(self, *exc: object) -> None:
        _guarded.reset(self._token)
