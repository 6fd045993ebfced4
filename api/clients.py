"""Who is asking: the client a request counts against (api/budget.py)."""

from __future__ import annotations

from ipaddress import IPv6Address, ip_address, ip_network

from flask import request

from shared.config import get_settings


def _valid(address: str) -> bool:
    try:
        ip_address(address)
    except ValueError:
        return False
    return True


def _trusted(address: str) -> bool:
    return _valid(address) and any(
        ip_address(address) in network for network in get_settings().trusted_proxies
    )


def client_address() -> str:
    """The client's address: the peer's, or, when the peer is a trusted proxy
    (BACKSCOPE_TRUSTED_PROXIES, or anyone on our unix socket), the last address in
    X-Forwarded-For that is not itself a trusted proxy. Anyone else's X-Forwarded-For
    is ignored: a client could write any address there."""
    peer = request.remote_addr or ""
    address = peer or "unknown"
    # A unix socket's peer has no address: only a process on this machine can connect
    # (nginx in front, docs/deploy.md), so it is trusted like BACKSCOPE_TRUSTED_PROXIES.
    if peer and not _trusted(peer):
        return address
    forwarded = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",")]
    for hop in reversed([hop for hop in forwarded if hop]):
        if not _trusted(hop):
            return hop if _valid(hop) else address
    return address


def budget_client(address: str) -> str:
    """Who an address counts as for the work budget: an IPv4 address is one client;
    an IPv6 address counts as its /64, which one host (or one home) owns whole and can
    draw addresses from at will."""
    try:
        parsed = ip_address(address)
    except ValueError:
        return address
    if not isinstance(parsed, IPv6Address):
        return address
    if parsed.ipv4_mapped is not None:  # an IPv4 client on a dual-stack socket
        return str(parsed.ipv4_mapped)
    return str(ip_network(f"{parsed}/64", strict=False))
