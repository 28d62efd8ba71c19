"""The shared HTTP machinery of the channels: answers to errors, Retry-After, time-outs, resets, redirects,
the origin header, and the session a channel owns when the app lends none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import pytest

from core.channels.base import ChannelContext, HttpChannel, HttpChannelSettings, error_for_status, parse_retry_after
from core.channels.errors import PermanentChannelError, TransientChannelError, safe_url
from tests.peers.http_sink import HttpSink, Reply
from tests.peers.smtp_sink import free_port


class Probe(HttpChannel):
    """The smallest HTTP channel: the shared request() and nothing else."""

    type = "probe"


def probe(context: ChannelContext | None = None, **settings: object) -> Probe:
    return Probe(
        "probe", HttpChannelSettings.model_validate({"allow_private": True, **settings}), context or ChannelContext()
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("7", 7.0), (" 2.5 ", 2.5), ("-3", 0.0), ("soon", None), ("nan", None), ("inf", None)],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_retry_after_http_date() -> None:
    now = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == pytest.approx(90)
    earlier = format_datetime(now - timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(earlier, now=now.timestamp()) == 0.0


@pytest.mark.parametrize(
    ("status", "transient"),
    [
        (301, False),
        (302, False),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (410, False),
        (413, False),
        (422, False),
        (408, True),
        (409, True),
        (425, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
    ],
)
def test_status_mapping(status: int, transient: bool) -> None:
    error = error_for_status(status, "m", retry_after=3.0)
    assert isinstance(error, TransientChannelError if transient else PermanentChannelError)
    assert error.status_code == status
    if transient:
        assert isinstance(error, TransientChannelError) and error.retry_after == 3.0


def test_safe_url_keeps_only_scheme_host_and_port() -> None:
    assert safe_url("https://hooks.slack.com/services/T0/B0/SECRETSECRET?x=1") == "https://hooks.slack.com"
    assert safe_url("http://127.0.0.1:8080/a") == "http://127.0.0.1:8080"
    assert safe_url("http://[::1]:9/a") == "http://[::1]:9"


async def test_every_request_carries_origin_and_user_agent() -> None:
    async with HttpSink() as sink:
        channel = probe(ChannelContext(origin="ackbot-test-origin", user_agent="ackbot/9"))
        try:
            response = await channel.request("POST", sink.url("/x"), body=b"{}")
        finally:
            await channel.close()
        [got] = sink.requests
        assert response.status == 200 and response.text == "ok"
        assert got.headers["X-Ackbot-Origin"] == "ackbot-test-origin"
        assert got.headers["User-Agent"] == "ackbot/9"
        assert got.headers["Content-Type"] == "application/json"


async def test_429_is_transient_with_retry_after() -> None:
    async with HttpSink(Reply(429, "slow down", {"Retry-After": "17"})) as sink:
        channel = probe()
        try:
            with pytest.raises(TransientChannelError) as caught:
                await channel.request("POST", sink.url("/x"), body=b"{}")
        finally:
            await channel.close()
    assert caught.value.status_code == 429
    assert caught.value.retry_after == 17.0
    assert "HTTP 429" in str(caught.value) and "slow down" in str(caught.value)


async def test_503_honours_retry_after_too() -> None:
    async with HttpSink(Reply(503, headers={"Retry-After": "5"})) as sink:
        channel = probe()
        try:
            with pytest.raises(TransientChannelError) as caught:
                await channel.request("GET", sink.url("/x"))
        finally:
            await channel.close()
    assert caught.value.retry_after == 5.0


async def test_redirects_are_not_followed() -> None:
    async with HttpSink(Reply(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})) as sink:
        channel = probe()
        try:
            with pytest.raises(PermanentChannelError, match="redirects are not followed"):
                await channel.request("POST", sink.url("/x"), body=b"{}")
        finally:
            await channel.close()
        assert len(sink.requests) == 1


async def test_a_hang_times_out_as_transient() -> None:
    async with HttpSink(Reply.hang(10)) as sink:
        channel = probe(timeout=0.3)
        try:
            with pytest.raises(TransientChannelError, match=r"timed out after 0\.3s"):
                await channel.request("POST", sink.url("/x"), body=b"{}")
        finally:
            await channel.close()


async def test_a_connection_reset_is_transient() -> None:
    async with HttpSink(Reply.reset()) as sink:
        channel = probe()
        try:
            with pytest.raises(TransientChannelError, match="failed"):
                await channel.request("POST", sink.url("/x"), body=b"{}")
        finally:
            await channel.close()


async def test_a_refused_connection_is_transient() -> None:
    channel = probe()
    try:
        with pytest.raises(TransientChannelError, match="failed"):
            await channel.request("POST", f"http://127.0.0.1:{free_port()}/x", body=b"{}")
    finally:
        await channel.close()


async def test_uses_the_apps_session_and_never_closes_it() -> None:
    async with HttpSink() as sink, aiohttp.ClientSession() as session:
        channel = probe(ChannelContext(http=session))
        await channel.request("GET", sink.url("/x"))
        await channel.close()
        assert not session.closed
        assert channel._own_http is None


async def test_without_a_session_it_owns_one_and_closes_it() -> None:
    async with HttpSink() as sink:
        channel = probe()
        await channel.request("GET", sink.url("/x"))
        own = channel._own_http
        assert own is not None and not own.closed
        await channel.close()
        assert own.closed


async def test_error_messages_never_show_url_paths_or_queries() -> None:
    async with HttpSink(Reply(500, "failed for http://127.0.0.1/services/T0/B0/SECRETSECRETSECRET")) as sink:
        channel = probe()
        try:
            with pytest.raises(TransientChannelError) as caught:
                await channel.request("POST", sink.url("/services/T0/B0/SECRETSECRETSECRET?sig=abc"), body=b"{}")
        finally:
            await channel.close()
    assert "SECRETSECRETSECRET" not in str(caught.value)
    assert "sig=abc" not in str(caught.value)
