"""
The client's real address behind trusted proxies.

With ``proxy.trusted`` networks configured, a connection from a trusted peer is taken to
come from the address its forwarding headers name: the ``for=`` elements of ``Forwarded``
(RFC 7239) or, without that header, the entries of ``X-Forwarded-For``. The hops are read
from the right, the peer first: the first address outside the trusted networks is the
client's (a client can put anything at the left of these headers, but not at the right of
what a trusted proxy added). Headers from an untrusted peer are ignored. A PROXY-protocol
listener (``haproxy:tcp:8000``) needs none of this: its peer already is the client.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping

__all__ = ["TrustedProxies"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_FOR = re.compile(r'(?:^|[;,\s])for\s*=\s*("[^"]*"|[^;,\s]*)', re.IGNORECASE)


class TrustedProxies:
    """The proxies of ``networks`` (addresses or CIDR networks, checked by the config)."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(network, strict=False) for network in networks
        )

    def trusts(self, address: Address) -> bool:
        """Whether ``address`` is in one of the trusted networks."""
        address = getattr(address, "ipv4_mapped", None) or address
        return any(address in network for network in self.networks)

    def client_address(self, peer: str, headers: Mapping[str, str]) -> str:
        """
        The client address of a connection from ``peer`` with ``headers`` (lowercase names,
        repeated headers joined with commas): ``peer`` unless it is a trusted proxy.
        """
        if not self.networks:
            return peer
        current = _parse(peer)
        if current is None or not self.trusts(current):
            return peer
        if "forwarded" in headers:
            hops = [match.group(1) for match in _FOR.finditer(headers["forwarded"])]
        else:
            hops = headers.get("x-forwarded-for", "").split(",")
        for hop in reversed(hops):
            address = _parse(hop)
            if address is None:
                break  # an obfuscated or garbled hop: the last proxy is as far as we know
            current = address
            if not self.trusts(address):
                break
        return str(current)


def _parse(text: str) -> Address | None:
    """An IP address from a header hop: ``1.2.3.4``, ``1.2.3.4:80``, ``"[::1]:80"``, ``::1``."""
    text = text.strip().strip('"').strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
