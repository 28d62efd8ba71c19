"""The Slack incoming-webhook channel against a local fake of hooks.slack.com."""

from __future__ import annotations

from typing import Any

import pytest

from core.channels.base import ChannelContext, Notification
from core.channels.errors import PermanentChannelError, TransientChannelError
from core.channels.slack_webhook import SlackWebhookChannel, SlackWebhookSettings
from tests.peers.http_sink import HttpSink, Reply
from tests.peers.notes import make_note

HOOK_PATH = "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"


def render(note: Notification) -> dict[str, Any]:
    return {
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": note.title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": note.summary or "-"}},
        ]
    }


def slack(
    url: str, monkeypatch: pytest.MonkeyPatch, *, renderer: bool = True, **settings: object
) -> SlackWebhookChannel:
    monkeypatch.setenv("SLACK_HOOK", url)
    data = {"url": "env:SLACK_HOOK", "allow_private": True, "timeout": 2, **settings}
    context = ChannelContext(renderers={"slack": render} if renderer else {}, origin="origin-1")
    return SlackWebhookChannel("slack-hook", SlackWebhookSettings.model_validate(data), context)


async def test_posts_the_renderers_blocks_with_a_fallback_text(monkeypatch: pytest.MonkeyPatch) -> None:
    async with HttpSink(Reply.text("ok")) as sink:
        channel = slack(sink.url(HOOK_PATH), monkeypatch)
        try:
            result = await channel.send(make_note())
        finally:
            await channel.close()
    [got] = sink.requests
    assert (got.method, got.path) == ("POST", HOOK_PATH)
    assert got.headers["X-Ackbot-Origin"] == "origin-1"
    body = got.json()
    assert body["blocks"] == render(make_note())["blocks"]
    assert body["text"] == "[CRITICAL] CVE-2024-0001 in &lt;payments&gt; &amp; co"
    assert result.message_ref is None and result.status_code == 200
    assert not channel.supports_update


async def test_without_a_renderer_a_plain_message_with_ack_links(monkeypatch: pytest.MonkeyPatch) -> None:
    async with HttpSink(Reply.text("ok")) as sink:
        channel = slack(sink.url(HOOK_PATH), monkeypatch, renderer=False)
        try:
            await channel.send(make_note())
        finally:
            await channel.close()
    text = sink.requests[0].json()["text"]
    assert "&lt;payments&gt;" in text
    assert "<https://ackbot.example.com/ack/tok-ack-123|Acknowledge>" in text


async def test_too_many_blocks_is_permanent_and_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    async with HttpSink() as sink:
        channel = slack(sink.url(HOOK_PATH), monkeypatch)
        channel.context.renderers["slack"] = lambda note: {"blocks": [{"type": "divider"}] * 51}
        try:
            with pytest.raises(PermanentChannelError, match="51 blocks"):
                await channel.send(make_note())
        finally:
            await channel.close()
        assert sink.requests == []


@pytest.mark.parametrize(
    ("reply", "error", "meaning"),
    [
        (Reply.text("invalid_payload", 400), PermanentChannelError, "could not read the message"),
        (Reply.text("action_prohibited", 403), PermanentChannelError, "forbids"),
        (Reply.text("channel_not_found", 404), PermanentChannelError, "no longer exists"),
        (Reply.text("no_service", 404), PermanentChannelError, "removed or disabled"),
        (Reply.text("channel_is_archived", 410), PermanentChannelError, "archived"),
        (Reply.text("rollup_error", 500), TransientChannelError, "Slack-side"),
        (Reply.text("no_service", 500), PermanentChannelError, "removed or disabled"),
        (Reply.text("rate_limited", 429, {"Retry-After": "30"}), TransientChannelError, "too fast"),
        (Reply(502), TransientChannelError, "HTTP 502"),
    ],
)
async def test_slack_errors_are_mapped_and_explained(
    reply: Reply, error: type[Exception], meaning: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with HttpSink(reply) as sink:
        channel = slack(sink.url(HOOK_PATH), monkeypatch)
        try:
            with pytest.raises(error) as caught:
                await channel.send(make_note())
        finally:
            await channel.close()
    assert meaning in str(caught.value)
    # The webhook URL is the credential: no part of its path may show.
    assert "XXXXXXXXXXXXXXXXXXXXXXXX" not in str(caught.value) and "T00000000" not in str(caught.value)
    if reply.status == 429:
        assert isinstance(caught.value, TransientChannelError) and caught.value.retry_after == 30.0


async def test_a_time_out_is_transient_and_hides_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    async with HttpSink(Reply.hang(5)) as sink:
        channel = slack(sink.url(HOOK_PATH), monkeypatch, timeout=0.3)
        try:
            with pytest.raises(TransientChannelError) as caught:
                await channel.send(make_note())
        finally:
            await channel.close()
    assert "XXXXXXXXXXXXXXXXXXXXXXXX" not in str(caught.value)


def test_the_url_must_be_a_secret_reference() -> None:
    with pytest.raises(ValueError, match="secret reference"):
        SlackWebhookSettings.model_validate({"url": "https://hooks.slack.com/services/T/B/X"})


def test_pacing_is_one_message_a_second() -> None:
    assert SlackWebhookChannel.RATE_PER_SECOND == 1.0
