"""The SSRF policy: which IP addresses a webhook may reach, and IP literals hidden in host names."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _net(cidr: str) -> IPNetwork:
    return ipaddress.ip_network(cidr)


# Checked in order; the first match names the reason. Written out rather than left to
# `ipaddress`'s is_private/is_global, whose tables change between Python versions (3.11 calls
# ::ffff:127.0.0.1, 2002::/16 and fec0::/10 "global").
REFUSED_NETWORKS: tuple[tuple[IPNetwork, str], ...] = (
    (_net("0.0.0.0/8"), "unspecified ('this network')"),
    (_net("127.0.0.0/8"), "loopback"),
    (_net("10.0.0.0/8"), "private"),
    (_net("172.16.0.0/12"), "private"),
    (_net("192.168.0.0/16"), "private"),
    (_net("100.64.0.0/10"), "carrier-grade NAT (shared)"),
    (_net("169.254.0.0/16"), "link-local (where cloud metadata services live)"),
    (_net("192.0.0.0/24"), "IETF protocol assignment"),
    (_net("192.0.2.0/24"), "documentation"),
    (_net("198.51.100.0/24"), "documentation"),
    (_net("203.0.113.0/24"), "documentation"),
    (_net("198.18.0.0/15"), "benchmarking"),
    (_net("224.0.0.0/4"), "multicast"),
    (_net("240.0.0.0/4"), "reserved"),  # includes the broadcast address 255.255.255.255
    (_net("::/128"), "unspecified"),
    (_net("::1/128"), "loopback"),
    (_net("::ffff:0:0/96"), "IPv4-mapped IPv6"),
    (_net("::/96"), "IPv4-compatible IPv6"),
    (_net("64:ff9b:1::/48"), "local-use NAT64"),
    (_net("100::/64"), "discard-only"),
    (_net("2001:db8::/32"), "documentation"),
    (_net("fc00::/7"), "unique local (IPv6 ULA)"),
    (_net("fe80::/10"), "link-local"),
    (_net("fec0::/10"), "site-local (deprecated)"),
    (_net("ff00::/8"), "multicast"),
)

# IPv6 ranges that carry an IPv4 address inside: refused when the IPv4 one is.
NAT64 = _net("64:ff9b::/96")


def refusal(address: IPAddress, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """Why `address` is refused ("loopback", ...), or None when a webhook may connect to it."""
    if any(address.version == net.version and address in net for net in allowed):
        return None
    for network, reason in REFUSED_NETWORKS:
        if address.version == network.version and address in network:
            return reason
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        inner = refusal(embedded, allowed)
        if inner is not None:
            return f"IPv6 embedding a {inner} IPv4 address ({embedded})"
    # Anything else the standard library does not call global (e.g. 2001::/23 IETF ranges).
    if not address.is_global:
        return "not globally routable"
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside a 6to4, Teredo (client) or NAT64 IPv6 address."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def literal_address(host: str) -> IPAddress | None:
    """The IP address `host` spells, in any form a resolver accepts, or None for a name.

    Besides `127.0.0.1` and `::1`, C resolvers read `127.1`, `2130706433`, `0x7f.0.0.1` and
    `0177.0.0.1` as IPv4 addresses: all are caught here, not only the dotted-quad spelling.
    """
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if host and all(part and _numeric(part) for part in host.rstrip(".").split(".")):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host.rstrip(".")))
        except OSError:
            return None
    return None


def _numeric(part: str) -> bool:
    lowered = part.lower()
    if lowered.startswith("0x"):
        return all(c in "0123456789abcdef" for c in lowered[2:])
    return part.isascii() and part.isdigit()


def parse_networks(value: str) -> tuple[IPNetwork, ...]:
    """Parse comma-separated CIDRs (`10.1.0.0/16, 127.0.0.1`); a bare address is a /32 or /128."""
    networks: list[IPNetwork] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=True))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not a network in CIDR notation: {exc}") from None
    return tuple(networks)
