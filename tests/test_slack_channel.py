"""The "slack" channel against a fake Slack Web API: post, DM, update, pacing key and the error table."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.app import build_registry
from bot.slack import SLACK_ERRORS, SlackChannel
from core.channels.base import ChannelContext
from core.channels.errors import PermanentChannelError, TransientChannelError
from core.config import AckbotConfig
from core.models.approvals import ApprovalState
from tests.peers.fake_slack import FakeSlack
from tests.peers.notes import make_approval_note, make_note

TOKEN = "xoxb-test-token"


@pytest.fixture
async def slack(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeSlack]:
    monkeypatch.setenv("ACKBOT_TEST_SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("ACKBOT_TEST_SLACK_SIGNING_SECRET", "signing-secret-0123456789")
    async with FakeSlack(token=TOKEN) as fake:
        yield fake
        assert fake.block_errors == []


def make_channel(slack: FakeSlack, **settings: Any) -> SlackChannel:
    config = AckbotConfig.model_validate(
        {
            "slack": {
                "bot_token": "env:ACKBOT_TEST_SLACK_BOT_TOKEN",
                "signing_secret": "env:ACKBOT_TEST_SLACK_SIGNING_SECRET",
                "api_base_url": slack.api_url,
            },
            "people": [{"name": "alice", "identities": {"slack": "U0ALICE"}}, {"name": "bob"}],
        }
    )
    channel = build_registry(config).build("slack", "slack", {"channel": "#ops", **settings}, ChannelContext())
    assert isinstance(channel, SlackChannel)
    return channel


async def test_posts_block_kit_to_the_channel_and_remembers_the_message(slack: FakeSlack) -> None:
    channel = make_channel(slack)
    result = await channel.send(make_note())
    [call] = slack.calls_to("chat.postMessage")
    assert call.headers["Authorization"] == f"Bearer {TOKEN}"
    assert call.args["channel"] == "#ops"
    assert call.args["text"] and call.args["blocks"] and call.args["unfurl_links"] is False
    # The buttons carry the ack tokens as values, under the action ids the click handler listens for.
    buttons = [e for b in call.args["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [(b["action_id"], b["value"]) for b in buttons] == [
        ("ackbot.acknowledge", "tok-ack-123"),
        ("ackbot.deny", "tok-deny-456"),
    ]
    assert result.message_ref == {"channel": "C0OPS", "ts": "1700000000.000001"}


async def test_a_person_is_sent_a_direct_message(slack: FakeSlack) -> None:
    channel = make_channel(slack)
    for target in ("U0ALICE", "person:alice"):
        result = await channel.send(make_note(target=target))
        assert result.message_ref is not None and result.message_ref["channel"].startswith("D")
    # conversations.open once per person and process; both posts went to the DM it returned.
    [opened] = slack.calls_to("conversations.open")
    assert opened.args["users"] == "U0ALICE"
    dm = {call.args["channel"] for call in slack.calls_to("chat.postMessage")}
    assert len(dm) == 1 and dm.pop().startswith("D")
    # A person without a Slack id, or a channel without a destination, cannot be delivered to: permanently.
    with pytest.raises(PermanentChannelError, match="bob"):
        await channel.send(make_note(target="person:bob"))
    with pytest.raises(PermanentChannelError, match="no channel"):
        await make_channel(slack, channel="").send(make_note())


async def test_update_edits_the_message_in_place(slack: FakeSlack) -> None:
    channel = make_channel(slack)
    sent = await channel.send(make_approval_note())
    assert sent.message_ref is not None
    result = await channel.update(sent.message_ref, make_approval_note(ApprovalState.acknowledged))
    assert result.message_ref == sent.message_ref
    [call] = slack.calls_to("chat.update")
    assert (call.args["channel"], call.args["ts"]) == (sent.message_ref["channel"], sent.message_ref["ts"])
    shown = slack.messages[(sent.message_ref["channel"], sent.message_ref["ts"])]
    assert "alice" in shown["text"] and "acknowledged" in shown["text"].lower()
    assert not [b for b in shown["blocks"] if b["type"] == "actions"], "a decided message keeps no buttons"
    with pytest.raises(PermanentChannelError, match="no channel/ts"):
        await channel.update({"channel": "C0OPS"}, make_approval_note())


async def test_pacing_is_keyed_by_slack_conversation(slack: FakeSlack) -> None:
    channel = make_channel(slack)
    other = make_channel(slack)
    other.name = "slack-2"
    assert channel.destination(make_note()) == other.destination(make_note()) == "slack:#ops"
    assert channel.destination(make_note(target="U0ALICE")) == "slack:U0ALICE"
    update = make_note(extra={"message_ref": {"channel": "C0OPS", "ts": "1.2"}})
    assert channel.destination(update) == "slack:C0OPS"
    # Once Slack has said which ids the names stand for, posts and edits of one conversation share one key.
    await channel.send(make_note())
    await channel.send(make_note(target="U0ALICE"))
    assert channel.destination(make_note()) == "slack:C0OPS"
    assert channel.destination(make_note(target="U0ALICE")).startswith("slack:D")
    assert channel.rate_per_second == 1.0 and channel.max_attempts == 3
    assert (SlackChannel.BACKOFF_BASE, SlackChannel.BACKOFF_MAX) == (1.0, 4.0)


@pytest.mark.parametrize(
    "code",
    [
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "msg_too_long",
        "invalid_blocks",
        "no_text",
        "restricted_action",
        "missing_scope",
    ],
)
async def test_permanent_slack_errors(slack: FakeSlack, code: str) -> None:
    slack.fail("chat.postMessage", code)
    with pytest.raises(PermanentChannelError) as caught:
        await make_channel(slack).send(make_note())
    assert code in str(caught.value) and SLACK_ERRORS[code][1] in str(caught.value)
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize(
    ("code", "status"),
    [("internal_error", 200), ("fatal_error", 200), ("service_unavailable", 503), ("request_timeout", 200)],
)
async def test_transient_slack_errors(slack: FakeSlack, code: str, status: int) -> None:
    slack.fail("chat.postMessage", code, status=status)
    with pytest.raises(TransientChannelError) as caught:
        await make_channel(slack).send(make_note())
    assert code in str(caught.value) and caught.value.status_code == status


async def test_rate_limit_carries_retry_after(slack: FakeSlack) -> None:
    slack.fail("chat.postMessage", "ratelimited", status=429, retry_after=7)
    channel = make_channel(slack)
    with pytest.raises(TransientChannelError) as caught:
        await channel.send(make_note())
    assert caught.value.status_code == 429 and caught.value.retry_after == 7.0
    # A rate-limited edit is the same, and the next attempt goes through.
    sent = await channel.send(make_note())
    assert sent.message_ref is not None
    slack.fail("chat.update", "ratelimited", status=429, retry_after=2)
    with pytest.raises(TransientChannelError) as caught:
        await channel.update(sent.message_ref, make_note())
    assert caught.value.retry_after == 2.0


async def test_unknown_codes_follow_the_status_and_the_network_is_transient(slack: FakeSlack) -> None:
    slack.fail("chat.postMessage", "something_new")
    with pytest.raises(PermanentChannelError, match="something_new"):
        await make_channel(slack).send(make_note())
    slack.fail("chat.postMessage", "something_new", status=502)
    with pytest.raises(TransientChannelError, match="something_new"):
        await make_channel(slack).send(make_note())
    slack.fail("conversations.open", "user_not_found")
    with pytest.raises(PermanentChannelError, match=r"conversations\.open failed: user_not_found"):
        await make_channel(slack).send(make_note(target="U0NOBODY"))
    await slack.__aexit__(None, None, None)
    with pytest.raises(TransientChannelError, match=r"chat\.postMessage failed"):
        await make_channel(slack).send(make_note())


async def test_the_token_is_a_reference_resolved_at_send_time(
    slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel = make_channel(slack, token="env:ACKBOT_TEST_OTHER_TOKEN")
    with pytest.raises(PermanentChannelError, match="ACKBOT_TEST_OTHER_TOKEN"):
        await channel.send(make_note())
    monkeypatch.setenv("ACKBOT_TEST_OTHER_TOKEN", "xoxb-wrong")
    with pytest.raises(PermanentChannelError, match="invalid_auth"):
        await channel.send(make_note())
    assert slack.calls_to("chat.postMessage")[-1].headers["Authorization"] == "Bearer xoxb-wrong"
