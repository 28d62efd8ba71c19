"""Outbound safety for every HTTP channel: no requests to internal addresses, none to ackbot itself.

A channel's URL comes from configuration and, for approval callbacks, from whoever asked for the approval.
Without these checks ackbot would be a server-side request forgery relay: a callback URL of
http://169.254.169.254/ would make it read cloud credentials, one of http://10.0.0.5/admin would reach
services the Internet cannot. So the destination host is resolved and every address it resolves to must be
globally routable, unless the channel's settings say ``allow_private: true`` (an internal service, a test).

Posting to ackbot's own public URL is refused whatever ``allow_private`` says: a webhook channel aimed at
our own events endpoint would turn one event into an endless stream of them. "Own" is judged on resolved
addresses and the port, not on spelling: localhost, 127.0.0.2, [::ffff:127.0.0.1], 0.0.0.0 and 2130706433 all
reach a public URL of http://127.0.0.1:8080.

IPv6 addresses that carry an IPv4 address (IPv4-mapped ::ffff:0:0/96, 6to4 2002::/16, Teredo 2001::/32) are
judged by the IPv4 address they carry too: 2002:7f00:1:: is a way to spell 127.0.0.1.

Every outbound connection goes through check_endpoint (HTTP channels through check_destination, which parses
the URL first; the SMTP channel with its host and port).

What is not covered: the address aiohttp connects to is resolved again after this check, so a DNS server
answering differently within seconds (DNS rebinding) could slip through; redirects, the other classic
bypass, are never followed (see ``error_for_status`` in base).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from core.channels.errors import PermanentChannelError, TransientChannelError, safe_url

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DEFAULT_PORTS = {"http": 80, "https": 443}

# Ranges Python's ipaddress flags do not name but that are not the public Internet either.
_EXTRA_BLOCKED: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = (
    (ipaddress.ip_network("100.64.0.0/10"), "shared address space (carrier-grade NAT, RFC 6598)"),
    (ipaddress.ip_network("fc00::/7"), "private (unique local, fc00::/7)"),
)


class UnsafeDestinationError(PermanentChannelError):
    """A destination the outbound safety rules refuse; the message says which rule and why."""


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (IPv4-mapped, 6to4, Teredo's server and client); [] for none."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        server, client = address.teredo
        return [client, server]
    return []


def classify_address(address: IPAddress) -> str | None:
    """Why an address is not a public destination, or None when it is one."""
    for carried in embedded_ipv4(address):
        # 2002:7f00:1:: (6to4) and ::ffff:127.0.0.1 (mapped) reach what they carry: judge that first.
        reason = classify_address(carried)
        if reason is not None:
            return f"{reason} (carried by {address})"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local (169.254.0.0/16, fe80::/10: includes the cloud metadata service)"
    if address.is_multicast:
        return "multicast"
    for network, reason in _EXTRA_BLOCKED:
        if address.version == network.version and address in network:
            return reason
    if address.is_private:
        return "private (RFC 1918 and other non-public ranges)"
    if address.is_reserved or not address.is_global:
        return "reserved, not globally routable"
    return None


def _reaches_this_host(address: IPAddress) -> bool:
    # Any loopback address, and the unspecified one (a connection to 0.0.0.0 goes to this host), in any spelling.
    return any(a.is_loopback or a.is_unspecified for a in [address, *embedded_ipv4(address)])


def _canonical(address: IPAddress) -> IPAddress:
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return mapped if mapped is not None else address


def _endpoint(url: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower().rstrip(".")
        port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        return None
    if not scheme or not host:
        return None
    return host, port


async def _addresses_or_none(host: str, port: int) -> set[IPAddress] | None:
    try:
        return {_canonical(address) for address in await resolve_host(host, port)}
    except TransientChannelError:
        return None


async def is_own_endpoint(host: str, port: int, public_url: str) -> bool:
    """Whether host:port reaches ackbot's own public URL: the same port, and an address in common (any address
    that reaches this host counts as one: 127.0.0.1, 127.0.0.2, ::1, 0.0.0.0 ...)."""
    own = _endpoint(public_url) if public_url else None
    if own is None:
        return False
    own_host, own_port = own
    if port != own_port:
        return False
    host = host.lower().rstrip(".")
    if host == own_host:
        return True
    theirs = await _addresses_or_none(host, port)
    ours = await _addresses_or_none(own_host, own_port)
    if not theirs or not ours:
        # A name that does not resolve is not reached at all; the connection attempt reports it.
        return False
    if theirs & ours:
        return True
    return any(map(_reaches_this_host, theirs)) and any(map(_reaches_this_host, ours))


async def is_own_url(url: str, public_url: str) -> bool:
    """Whether url points at ackbot's own public URL (see is_own_endpoint); the scheme does not matter."""
    endpoint = _endpoint(url)
    return endpoint is not None and await is_own_endpoint(*endpoint, public_url)


async def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address a host name resolves to (an address literal resolves to itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        # Name resolution failures are usually passing (a DNS outage); NXDOMAIN is rare enough to retry too.
        raise TransientChannelError(f"cannot resolve host {host!r}: {exc}") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        # IPv6 socket addresses may carry a scope ("fe80::1%eth0"); the address is what matters.
        text = str(sockaddr[0]).split("%", 1)[0]
        address = ipaddress.ip_address(text)
        if address not in addresses:
            addresses.append(address)
    return addresses


async def check_endpoint(
    host: str,
    port: int,
    *,
    where: str,
    allow_private: bool = False,
    public_url: str = "",
    own_urls: Sequence[str] = (),
) -> None:
    """Refuse (UnsafeDestinationError) a host:port that is ackbot itself (its public URL, or another URL that
    reaches this process, such as its listening address), or that reaches a non-public address unless
    allow_private; where is how messages name the destination."""
    for own in (public_url, *own_urls):
        if await is_own_endpoint(host, port, own):
            raise UnsafeDestinationError(
                f"refused {where}: it is ackbot's own public URL, and posting to ourselves would loop"
            )
    if allow_private:
        return
    addresses = await resolve_host(host, port)
    if not addresses:
        raise TransientChannelError(f"cannot resolve host {host!r}: no addresses")
    for address in addresses:
        reason = classify_address(address)
        if reason is not None:
            shown = host if host == str(address) else f"{host} ({address})"
            raise UnsafeDestinationError(
                f"refused {where}: {shown} is a {reason} address; set allow_private: true in the channel's "
                "settings to allow non-public destinations"
            )


async def check_destination(
    url: str, *, allow_private: bool = False, public_url: str = "", own_urls: Sequence[str] = ()
) -> None:
    """Refuse (UnsafeDestinationError) a URL that is not http(s), points at ackbot itself, or reaches a private host."""
    where = safe_url(url)
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname
        port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        raise UnsafeDestinationError("refused: the destination is not a valid URL") from None
    if scheme not in _DEFAULT_PORTS:
        raise UnsafeDestinationError(f"refused {where}: only http:// and https:// destinations are allowed")
    if not host:
        raise UnsafeDestinationError(f"refused {where}: the URL names no host")
    if parts.username is not None or parts.password is not None:
        # Credentials belong in the channel's secret settings, where they are references and never logged.
        raise UnsafeDestinationError(f"refused {where}: credentials in the URL are not accepted")
    await check_endpoint(host, port, where=where, allow_private=allow_private, public_url=public_url, own_urls=own_urls)
