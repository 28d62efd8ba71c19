"""Outbound safety: no requests to loopback, link-local (metadata), private or other non-public addresses,
none to ackbot itself, and the same rules hold when a real channel sends."""

from __future__ import annotations

import ipaddress

import pytest

from core.channels import safety
from core.channels.base import ChannelContext
from core.channels.errors import PermanentChannelError, TransientChannelError
from core.channels.safety import (
    IPAddress,
    UnsafeDestinationError,
    check_destination,
    classify_address,
    is_own_url,
)
from core.channels.webhook import WebhookChannel, WebhookSettings
from tests.peers.http_sink import HttpSink
from tests.peers.notes import make_note


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "shared address space"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:10.0.0.1", "private"),
        # 6to4 (2002::/16) carries an IPv4 address in its next 32 bits: the address it reaches through a relay.
        ("2002:7f00:1::", "loopback"),
        ("2002:a00:1::", "private"),
        ("2002:a9fe:a9fe::", "link-local"),
        ("2002:c0a8:101::1", "private"),
        ("2002:6440:1::", "shared address space"),
        ("2002::", "unspecified"),
        # Teredo (2001::/32): the client's address, obfuscated in the last 32 bits, and the server's.
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private"),
        ("2001:0:7f00:1:8000:63bf:f7f7:f7f7", "loopback"),  # server 127.0.0.1, client 8.8.8.8
    ],
)
def test_non_public_addresses_are_classified(address: str, reason: str) -> None:
    found = classify_address(ipaddress.ip_address(address))
    assert found is not None and reason in found


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2002:808:808::1"])
def test_public_addresses_pass(address: str) -> None:
    assert classify_address(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/admin",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://localhost/x",
        "http://0.0.0.0/",
    ],
)
async def test_private_destinations_are_refused_without_allow_private(url: str) -> None:
    with pytest.raises(UnsafeDestinationError, match="allow_private"):
        await check_destination(url)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/hook", "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/admin"]
)
async def test_allow_private_lets_them_through(url: str) -> None:
    await check_destination(url, allow_private=True)


async def test_a_public_address_is_accepted() -> None:
    await check_destination("https://8.8.8.8/hook")


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize(
    ("url", "public_url"),
    [
        ("https://ackbot.example.com/api/v1/events", "https://ackbot.example.com"),
        ("https://ACKBOT.example.com:443/x", "https://ackbot.example.com/"),
        ("http://127.0.0.1:8080/api/v1/events", "http://127.0.0.1:8080"),
    ],
)
async def test_our_own_public_url_is_refused_even_with_allow_private(
    url: str, public_url: str, allow_private: bool
) -> None:
    assert await is_own_url(url, public_url)
    with pytest.raises(UnsafeDestinationError, match="own public URL"):
        await check_destination(url, allow_private=allow_private, public_url=public_url)


@pytest.mark.parametrize(
    ("url", "public_url"),
    [
        ("http://ackbot.example.com/x", "https://ackbot.example.com"),  # another port (80, not 443)
        ("https://ackbot.example.com:8443/x", "https://ackbot.example.com"),  # another port
        ("https://hooks.example.com/x", "https://ackbot.example.com"),  # another host, another address
        ("https://ackbot.example.com/x", ""),  # no public URL known
        ("http://127.0.0.1:8081/x", "http://127.0.0.1:8080"),  # this host, another port
        ("http://8.8.8.8:8080/x", "http://127.0.0.1:8080"),  # the port, another host
    ],
)
async def test_only_the_same_address_and_port_is_our_own(
    url: str, public_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns(monkeypatch, {"ackbot.example.com": ["93.184.216.34"], "hooks.example.com": ["93.184.216.35"]})
    assert not await is_own_url(url, public_url)


def fake_dns(monkeypatch: pytest.MonkeyPatch, table: dict[str, list[str]]) -> None:
    """Names resolve from the table (address literals to themselves): tests make no DNS queries."""

    async def resolve(host: str, port: int) -> list[IPAddress]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        if host not in table:
            raise TransientChannelError(f"cannot resolve host {host!r}")
        return [ipaddress.ip_address(a) for a in table[host]]

    monkeypatch.setattr(safety, "resolve_host", resolve)


# Spellings of http://127.0.0.1:8080 that a string comparison misses; each reaches the process listening there.
OWN_URL_ALIASES = [
    "http://localhost:8080/api/v1/events",
    "http://127.0.0.2:8080/api/v1/events",
    "http://[::ffff:127.0.0.1]:8080/api/v1/events",
    "http://[::1]:8080/api/v1/events",
    "http://0.0.0.0:8080/api/v1/events",
    "http://2130706433:8080/api/v1/events",
    "https://127.0.0.1:8080/api/v1/events",  # the scheme does not change where it connects
    "http://ackbot.internal:8080/api/v1/events",  # a name that resolves to the same address
]


@pytest.mark.parametrize(
    "public_url", ["http://127.0.0.1:8080", "http://localhost:8080", "http://ackbot.internal:8080"]
)
@pytest.mark.parametrize("url", OWN_URL_ALIASES)
async def test_aliases_of_our_own_url_are_refused_with_allow_private(
    url: str, public_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 2130706433 is 127.0.0.1 as one number (getaddrinfo reads it so; the last test checks the real one).
    table = {"localhost": ["127.0.0.1", "::1"], "ackbot.internal": ["127.0.0.1"], "2130706433": ["127.0.0.1"]}
    fake_dns(monkeypatch, table)
    assert await is_own_url(url, public_url)
    with pytest.raises(UnsafeDestinationError, match="own public URL"):
        await check_destination(url, allow_private=True, public_url=public_url)


async def test_the_real_resolver_finds_the_numeric_and_named_aliases() -> None:
    # No fake here: getaddrinfo itself reads 2130706433 and localhost (both are answered without a DNS server).
    for url in ("http://2130706433:8080/x", "http://localhost:8080/x"):
        assert await is_own_url(url, "http://127.0.0.1:8080")


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("ftp://example.com/x", "only http"),
        ("file:///etc/passwd", "only http"),
        ("http:///nohost", "no host"),
        ("https://user:pass@8.8.8.8/", "credentials"),
    ],
)
async def test_odd_urls_are_refused(url: str, match: str) -> None:
    with pytest.raises(UnsafeDestinationError, match=match):
        await check_destination(url, allow_private=True)


async def test_refusals_are_permanent_channel_errors() -> None:
    assert issubclass(UnsafeDestinationError, PermanentChannelError)


async def test_a_channel_refuses_loopback_without_allow_private_and_sends_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOOK_SECRET", "whsec-test-0123456789")
    async with HttpSink() as sink:
        closed = WebhookChannel(
            "hook", WebhookSettings(url=sink.url("/hook"), secret="env:HOOK_SECRET"), ChannelContext()
        )
        opened = WebhookChannel(
            "hook",
            WebhookSettings(url=sink.url("/hook"), secret="env:HOOK_SECRET", allow_private=True),
            ChannelContext(),
        )
        ours = WebhookChannel(
            "hook",
            WebhookSettings(url=sink.url("/api/v1/events"), secret="env:HOOK_SECRET", allow_private=True),
            ChannelContext(public_url=sink.base_url),
        )
        try:
            with pytest.raises(UnsafeDestinationError, match="loopback"):
                await closed.send(make_note())
            with pytest.raises(UnsafeDestinationError, match="own public URL"):
                await ours.send(make_note())
            assert sink.requests == []
            await opened.send(make_note())
            assert len(sink.requests) == 1
        finally:
            for channel in (closed, opened, ours):
                await channel.close()


async def test_the_listening_address_is_ours_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # Behind a proxy the public URL names another host; the port ackbot listens on still reaches it.
    fake_dns(monkeypatch, {"ackbot.example.com": ["93.184.216.34"]})
    for url in ("http://127.0.0.1:8080/api/v1/events", "http://[::1]:8080/x"):
        with pytest.raises(UnsafeDestinationError, match="own public URL"):
            await check_destination(
                url, allow_private=True, public_url="https://ackbot.example.com", own_urls=("http://0.0.0.0:8080",)
            )
    await check_destination(
        "http://127.0.0.1:9090/x",
        allow_private=True,
        public_url="https://ackbot.example.com",
        own_urls=("http://0.0.0.0:8080",),
    )
