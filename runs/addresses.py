"""Which network addresses webhooks may reach. Standard library only: settings checks literal
addresses with it at start-up, in every process, so it must cost nothing to import."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_public(address: str) -> bool:
    """True for a globally routable unicast address (not loopback, private, link-local such
    as cloud metadata at 169.254.169.254, multicast, reserved or unspecified)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def literal_private_host(url: str) -> str | None:
    """The host of ``url`` if it is an IP literal that is not public (checked at start-up)."""
    host = urlsplit(url).hostname or ""
    try:
        return None if is_public(host) else host
    except ValueError:  # a name: checked when it is resolved, at each delivery
        return None
