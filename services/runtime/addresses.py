"""Which URLs tubeflow refuses to fetch: hosts that are literal non-public addresses, or `localhost` names."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


def _literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    host = host.strip("[]")
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        # inet_aton accepts the legacy spellings browsers and libcurl also accept: 2130706433, 0x7f.1, 0177.0.0.1
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except (OSError, ValueError):
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def forbidden_reason(url: str) -> str | None:
    """Why this URL's host is not allowed, or None when it may be fetched."""
    try:
        host = (urlsplit(url).hostname or "").rstrip(".").lower()
    except ValueError:
        return None
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is a loopback name"
    address = _literal_address(host)
    if address is None:
        return None
    if not address.is_global or address.is_multicast or address.is_reserved or address.is_unspecified:
        return f"{address} is not a public address"
    return None
