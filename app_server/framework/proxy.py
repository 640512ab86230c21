"""Whose ``Forwarded`` / ``X-Forwarded-*`` headers to believe (``--forwarded-allow-ips``).

Owns: ``ForwardedPolicy``, which decides from the peer address whether the
proxy headers of a request are trusted and, if so, which client address and
scheme they report. Pure: strings in, strings out; garbage header values are
ignored, never raised.

The walk follows the chain right to left. The rightmost hop was appended by
our peer; each hop further left is only as trustworthy as the proxy that
appended it, so the walk continues past trusted addresses and stops at the
first untrusted one, which is the client. A hop that names no usable address
(``unknown``, an obfuscated ``_id``, garbage) ends the walk too, because what
lies to its left was written by a party nobody vouched for.

Rule: imports only ``framework.datastructures`` from the package.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import NamedTuple

from app_server.framework.datastructures import (
    Headers,
    split_header_value,
    unquote_header_value,
)

__all__ = ["ForwardedPolicy"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

TRUST_ALL = "*"
FORWARDED_SCHEMES = frozenset({"http", "https", "ws", "wss"})
DEFAULT_CACHE_SIZE = 1024


class Hop(NamedTuple):
    """One proxy hop: the address it received from (``None`` if unusable) and its scheme."""

    address: str | None
    scheme: str | None


class ForwardedPolicy:
    """Trusted proxies: IPs, CIDR networks, or ``"*"`` for every peer.

    Entries may also be comma-separated in one string, as on the command line.
    A peer with no IP (a Unix socket) is trusted only under ``"*"``.
    """

    __slots__ = ("_trust_all", "_addresses", "_networks", "_cache", "_cache_size")

    def __init__(self, allow: Iterable[str], *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._trust_all = False
        self._addresses: set[IPAddress] = set()
        self._networks: list[IPNetwork] = []
        for entry in allow:
            for item in entry.split(","):
                self._add(item.strip())
        self._cache: dict[str, bool] = {}
        self._cache_size = cache_size

    def _add(self, item: str) -> None:
        if not item:
            return
        if item == TRUST_ALL:
            self._trust_all = True
            return
        try:
            if "/" in item:
                self._networks.append(ipaddress.ip_network(item, strict=False))
            else:
                self._addresses.add(ipaddress.ip_address(item))
        except ValueError:
            raise ValueError(
                f"invalid forwarded-allow-ips entry {item!r}: "
                "expected an IP address, a CIDR network such as 10.0.0.0/8, or *"
            ) from None

    @property
    def trusts_anyone(self) -> bool:
        return self._trust_all or bool(self._addresses) or bool(self._networks)

    def trusts(self, peer_ip: str) -> bool:
        """Whether ``peer_ip``'s proxy headers are believed."""
        if self._trust_all:
            return True
        cached = self._cache.get(peer_ip)
        if cached is None:
            cached = self._match(peer_ip)
            if len(self._cache) >= self._cache_size:
                # Drop the oldest entry: dicts keep insertion order.
                del self._cache[next(iter(self._cache))]
            self._cache[peer_ip] = cached
        return cached

    def _match(self, peer_ip: str) -> bool:
        address = _parse_ip(peer_ip)
        if address is None:
            return False
        if address in self._addresses:
            return True
        return any(address in network for network in self._networks)

    def resolve(self, peer_ip: str, scheme: str, headers: Headers) -> tuple[str, str]:
        """The client ``(ip, scheme)`` for a request from ``peer_ip``."""
        if not self.trusts(peer_ip):
            return peer_ip, scheme
        hops = _forwarded_hops(headers.getall("forwarded"))
        if not hops:
            hops = _x_forwarded_hops(
                headers.getall("x-forwarded-for"), headers.getall("x-forwarded-proto")
            )
        return self._walk(hops, peer_ip, scheme)

    def _walk(self, hops: list[Hop], client: str, scheme: str) -> tuple[str, str]:
        for hop in reversed(hops):
            if hop.scheme is not None:
                scheme = hop.scheme
            if hop.address is None:
                break
            client = hop.address
            if not self.trusts(hop.address):
                break
        return client, scheme


def _parse_ip(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _node_address(node: str) -> str | None:
    """The IP of a node (``1.2.3.4:80``, ``[2001:db8::1]:4711``, ``::1``), normalised."""
    node = node.strip()
    if node.startswith("["):
        host = node[1 : node.find("]")] if "]" in node else ""
    elif node.count(":") == 1:
        host = node.partition(":")[0]
    else:
        host = node
    address = _parse_ip(host)
    return str(address) if address is not None else None


def _scheme(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    return value if value in FORWARDED_SCHEMES else None


def _forwarded_hops(values: list[str]) -> list[Hop]:
    """RFC 7239 elements, in order, from every ``Forwarded`` header."""
    hops: list[Hop] = []
    for value in values:
        for element in split_header_value(value, ","):
            params = _element_params(element)
            if params:
                node = params.get("for")
                address = _node_address(node) if node is not None else None
                hops.append(Hop(address, _scheme(params.get("proto"))))
    return hops


def _element_params(element: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in split_header_value(element, ";"):
        name, eq, value = pair.partition("=")
        name = name.strip().lower()
        if eq and name and name not in params:
            params[name] = unquote_header_value(value.strip())
    return params


def _x_forwarded_hops(for_values: list[str], proto_values: list[str]) -> list[Hop]:
    """Pair X-Forwarded-For addresses with X-Forwarded-Proto schemes from the right.

    Proxies append to X-Forwarded-For but often set a single X-Forwarded-Proto,
    which then describes the hop our peer received, the rightmost one.
    """
    addresses = [item.strip() for value in for_values for item in value.split(",")]
    addresses = [item for item in addresses if item]
    schemes = [item.strip() for value in proto_values for item in value.split(",")]
    schemes = [item for item in schemes if item]
    if not addresses:
        # A proxy may report the scheme alone; it describes the peer's own hop.
        return [Hop(None, _scheme(schemes[-1]))] if schemes else []
    offset = len(addresses) - len(schemes)
    return [
        Hop(
            _node_address(address),
            _scheme(schemes[index - offset]) if index >= offset else None,
        )
        for index, address in enumerate(addresses)
    ]
