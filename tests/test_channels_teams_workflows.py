"""The Teams Workflows webhook channel against a local fake of a Power Automate HTTP trigger."""

from __future__ import annotations

from typing import Any

import pytest

from core.channels.base import ChannelContext, Notification
from core.channels.errors import PermanentChannelError, TransientChannelError
from core.channels.teams_workflows import TeamsWorkflowsChannel, TeamsWorkflowsSettings
from tests.peers.http_sink import HttpSink, Reply
from tests.peers.notes import make_note

FLOW_PATH = "/workflows/0123abcd/triggers/manual/paths/invoke"
SIG = "sIgNaTuRe0123456789abcdefABCDEF"


def card(note: Notification) -> dict[str, Any]:
    return {
        "type": "AdaptiveCard",
        "version": "1.5",
        "body": [{"type": "TextBlock", "text": note.title, "wrap": True}],
    }


def teams(
    base: str, monkeypatch: pytest.MonkeyPatch, *, renderer: bool = True, **settings: object
) -> TeamsWorkflowsChannel:
    monkeypatch.setenv("TEAMS_FLOW", f"{base}{FLOW_PATH}?api-version=2016-06-01&sp=%2Ftriggers&sv=1.0&sig={SIG}")
    data = {"url": "env:TEAMS_FLOW", "allow_private": True, "timeout": 2, **settings}
    context = ChannelContext(renderers={"teams_workflows": card} if renderer else {})
    return TeamsWorkflowsChannel("teams-flow", TeamsWorkflowsSettings.model_validate(data), context)


async def test_posts_the_card_in_a_message_envelope(monkeypatch: pytest.MonkeyPatch) -> None:
    async with HttpSink(Reply(202)) as sink:
        channel = teams(sink.base_url, monkeypatch)
        try:
            result = await channel.send(make_note())
        finally:
            await channel.close()
    [got] = sink.requests
    assert got.path == FLOW_PATH and f"sig={SIG}" in got.query
    assert got.json() == {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card(make_note())}
        ],
    }
    assert result.status_code == 202 and result.message_ref is None


async def test_without_a_renderer_a_small_card_links_to_the_ack_page(monkeypatch: pytest.MonkeyPatch) -> None:
    async with HttpSink(Reply(202)) as sink:
        channel = teams(sink.base_url, monkeypatch, renderer=False)
        try:
            await channel.send(make_note())
        finally:
            await channel.close()
    content = sink.requests[0].json()["attachments"][0]["content"]
    assert content["type"] == "AdaptiveCard"
    assert {
        "type": "Action.OpenUrl",
        "title": "Acknowledge",
        "url": "https://ackbot.example.com/ack/tok-ack-123",
    } in content["actions"]


async def test_over_28_kb_is_permanent_and_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    async with HttpSink(Reply(202)) as sink:
        channel = teams(sink.base_url, monkeypatch)
        channel.context.renderers["teams_workflows"] = lambda note: {
            "type": "AdaptiveCard",
            "body": [{"type": "TextBlock", "text": "x" * (29 * 1024)}],
        }
        try:
            with pytest.raises(PermanentChannelError, match="28672"):
                await channel.send(make_note())
        finally:
            await channel.close()
        assert sink.requests == []


@pytest.mark.parametrize(
    ("reply", "error", "retry_after"),
    [
        (Reply(429, headers={"Retry-After": "3"}), TransientChannelError, 3.0),
        (Reply(500), TransientChannelError, None),
        (Reply.hang(5), TransientChannelError, None),
        (
            Reply.json({"error": {"code": "TriggerInputSchemaMismatch", "message": f"bad input sig={SIG}"}}, 400),
            PermanentChannelError,
            None,
        ),
    ],
)
async def test_error_mapping(
    reply: Reply, error: type[Exception], retry_after: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with HttpSink(reply) as sink:
        channel = teams(sink.base_url, monkeypatch, timeout=0.3)
        try:
            with pytest.raises(error) as caught:
                await channel.send(make_note())
        finally:
            await channel.close()
    assert SIG not in str(caught.value)
    if isinstance(caught.value, TransientChannelError):
        assert caught.value.retry_after == retry_after
    if reply.status == 400:
        assert "TriggerInputSchemaMismatch" in str(caught.value)


def test_pacing_is_four_requests_a_second() -> None:
    assert TeamsWorkflowsChannel.RATE_PER_SECOND == 4.0
