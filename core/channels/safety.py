"""Outbound safety for every HTTP channel: no requests to internal addresses, none to ackbot itself.

A channel's URL comes from configuration and, for approval callbacks, from whoever asked for the approval.
Without these checks ackbot would be a server-side request forgery relay: a callback URL of
http://169.254.169.254/ would make it read cloud credentials, one of http://10.0.0.5/admin would reach
services the Internet cannot. So the destination host is resolved and every address it resolves to must be
globally routable, unless the channel's settings say ``allow_private: true`` (an internal service, a test).

Posting to ackbot's own public URL is refused whatever ``allow_private`` says: a webhook channel aimed at
our own events endpoint would turn one event into an endless stream of them.

What is not covered: the address aiohttp connects to is resolved again after this check, so a DNS server
answering differently within seconds (DNS rebinding) could slip through; redirects, the other classic
bypass, are never followed (see ``error_for_status`` in base).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
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


def classify_address(address: IPAddress) -> str | None:
    """Why an address is not a public destination, or None when it is one."""
    if isinstance(address, ipaddress.IPv6Address):
        # ::ffff:127.0.0.1 reaches 127.0.0.1; judge the IPv4 address it carries.
        mapped = address.ipv4_mapped
        if mapped is not None:
            return classify_address(mapped)
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


def _origin(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower().rstrip(".")
        port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        return None
    if not scheme or not host:
        return None
    return scheme, host, port


def is_own_url(url: str, public_url: str) -> bool:
    """Whether url points at ackbot's own public URL: same scheme, host and port (default ports filled in)."""
    if not public_url:
        return False
    own = _origin(public_url)
    return own is not None and _origin(url) == own


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


async def check_destination(url: str, *, allow_private: bool = False, public_url: str = "") -> None:
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
    if is_own_url(url, public_url):
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
