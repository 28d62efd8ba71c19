"""The Slack app over HTTP: signed requests to /slack/events, the slash command and button clicks.

Requests are signed exactly as Slack signs them (v0 HMAC-SHA256 of "v0:{timestamp}:{body}" with the signing
secret); replies travel to a response_url on the fake Slack, which checks every message with Block Kit's rules.
The approvals service is stubbed here; tests/test_slack_e2e.py runs the real one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from slack_sdk.signature import SignatureVerifier

from core.config import AckbotConfig, SlackConfig
from core.models.approvals import Approval, ApprovalState, Choice
from core.models.people import Actor, Identities, Person
from tests.conftest import AppFactory, auth, make_config
from tests.peers.fake_slack import FakeSlack
from tests.peers.notes import NOW, make_approval

TOKEN = "xoxb-test-token"
SIGNING_SECRET = "signing-secret-0123456789"
ALICE = "U0ALICE"  # a person in the config
MALLORY = "U0MALLORY"  # a workspace member ackbot does not know
BOB = "U0BOB"  # a person who sees tenant acme only (when a test adds him)


@pytest.fixture
async def slack(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeSlack]:
    monkeypatch.setenv("ACKBOT_TEST_SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("ACKBOT_TEST_SLACK_SIGNING_SECRET", SIGNING_SECRET)
    async with FakeSlack(token=TOKEN) as fake:
        yield fake
        assert fake.block_errors == []


def slack_settings(fake: FakeSlack, **overrides: Any) -> dict[str, Any]:
    return {
        "bot_token": "env:ACKBOT_TEST_SLACK_BOT_TOKEN",
        "signing_secret": "env:ACKBOT_TEST_SLACK_SIGNING_SECRET",
        "api_base_url": fake.api_url,
        **overrides,
    }


def slack_config(database_url: str, fake: FakeSlack, **overrides: Any) -> AckbotConfig:
    return make_config(
        database_url,
        slack=slack_settings(fake),
        people=[{"name": "alice", "display_name": "Alice", "identities": {"slack": ALICE}}],
        channels=[
            {"name": "console", "type": "console"},
            {"name": "ops", "type": "slack", "settings": {"channel": "#ops"}},
        ],
        **overrides,
    )


def signed(body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack sends with a request body."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature,
    }


def command_body(fake: FakeSlack, text: str, *, user: str = ALICE, response: str = "cmd") -> str:
    """A slash command as Slack posts it."""
    return urlencode(
        {
            "token": "legacy-verification-token",
            "team_id": fake.team_id,
            "team_domain": "acme",
            "channel_id": "C0OPS",
            "channel_name": "ops",
            "user_id": user,
            "user_name": user.lower(),
            "command": "/ackbot",
            "text": text,
            "api_app_id": "A0ACKBOT",
            "response_url": fake.response_url(response),
            "trigger_id": "1.2.3",
        }
    )


def click_body(
    fake: FakeSlack,
    value: str,
    *,
    action_id: str = "ackbot.acknowledge",
    user: str = ALICE,
    response: str = "click",
    channel: str = "C0OPS",
    ts: str = "1700000000.000001",
) -> str:
    """A block_actions payload for one button click, as Slack posts it."""
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": fake.team_id},
        "api_app_id": "A0ACKBOT",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False},
        "trigger_id": "1.2.3",
        "team": {"id": fake.team_id, "domain": "acme"},
        "channel": {"id": channel, "name": "ops"},
        "message": {"type": "message", "ts": ts, "text": "approval", "blocks": []},
        "response_url": fake.response_url(response, message=(channel, ts)),
        "actions": [
            {
                "action_id": action_id,
                "block_id": "ackbot.choices",
                "type": "button",
                "value": value,
                "action_ts": "1700000001.000001",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)})


@dataclass
class Decided:
    ok: bool
    message: str
    approval: Approval | None
    reason: str = ""
    held_update: None = None


@dataclass
class StubApprovals:
    """The approvals service's interface: accepts "good-token" from alice once; records every call.

    Everything else (start, stop, the dispatcher's enricher) is the real service's.
    """

    real: Any
    calls: list[tuple[str, Any]] = field(default_factory=list)
    delay: float = 0.0
    used: bool = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def decide(
        self, *, token: str, actor: Actor, choice: str | None = None, answering: dict[str, str] | None = None
    ) -> Decided:
        self.calls.append(("decide", (token, actor, choice, answering)))
        await asyncio.sleep(self.delay)
        if token != "good-token":
            return Decided(False, "This button's token is not valid.", None, "invalid")
        if actor.id != ALICE:
            return Decided(False, "You are not an approver of this request.", None, "forbidden")
        if self.used:
            return Decided(False, "This request was already decided.", None, "already_decided")
        self.used = True
        return Decided(True, "Acknowledged.", _decided(actor))

    async def get(self, *, approval_id: str) -> Approval | None:
        return make_approval(id="apr_1", alert_id="alr_1") if approval_id == "apr_1" else None

    async def decide_by_id(
        self, *, approval_id: str, choice: Choice, actor: Actor, tenant: str | None = None
    ) -> Decided:
        self.calls.append(("decide_by_id", (approval_id, choice, actor)))
        if approval_id != "apr_1" or actor.id != ALICE:
            return Decided(False, f"You may not decide {approval_id}.", None, "forbidden")
        return Decided(True, "Acknowledged.", _decided(actor))

    async def list_pending_for(self, *, actor: Actor, tenant: str | None = None) -> Sequence[Approval]:
        self.calls.append(("list_pending_for", (actor.id, tenant)))
        if actor.id != ALICE:
            return []
        return [make_approval(id="apr_1", alert_id="alr_1", title="Deploy payments 1.2.3 to prod?")]

    async def list_approvals(self, *, tenants: Any, states: Any = None, alert_id: str | None = None) -> Any:
        self.calls.append(("list_approvals", alert_id))
        return ([make_approval(id="apr_1", alert_id="alr_1")] if alert_id == "alr_1" else []), None


def _decided(actor: Actor) -> Approval:
    return make_approval(
        id="apr_1",
        alert_id=None,
        state=ApprovalState.acknowledged,
        decided_by=actor.display_name or actor.id,
        decided_at=NOW,
        decided_choice=Choice.acknowledge,
    )


async def start(
    app_factory: AppFactory, database_url: str, fake: FakeSlack, **kw: Any
) -> tuple[Any, Any, StubApprovals]:
    return await start_with(app_factory, slack_config(database_url, fake), **kw)


async def start_with(app_factory: AppFactory, config: AckbotConfig, **kw: Any) -> tuple[Any, Any, StubApprovals]:
    """The app on this config, its approvals service stubbed."""
    client, runtime = await app_factory(config, **kw)
    stub = StubApprovals(runtime.approvals)
    runtime.approvals = stub
    return client, runtime, stub


def reply_text(call: Any) -> str:
    """Everything a reply says, as one string."""
    return json.dumps(call.args, ensure_ascii=False)


# ---------------------------------------------------------------- signatures


async def test_bad_or_stale_signatures_get_401_and_do_nothing(
    app_factory: AppFactory, database_url: str, slack: FakeSlack
) -> None:
    client, _, stub = await start(app_factory, database_url, slack, run_dispatcher=False)
    body = click_body(slack, "good-token")
    refused = [
        signed(body, secret="not-the-signing-secret"),
        signed(body, timestamp=int(time.time()) - 6 * 60),  # Slack's replay window is 5 minutes
        {**signed(body), "X-Slack-Signature": "v0=" + "0" * 64},
        {"Content-Type": "application/x-www-form-urlencoded"},
    ]
    for headers in refused:
        resp = await client.post("/slack/events", data=body, headers=headers)
        assert resp.status == 401, await resp.text()
    # A body changed after signing is refused too.
    resp = await client.post("/slack/events", data=body.replace("good-token", "evil-token"), headers=signed(body))
    assert resp.status == 401
    command = command_body(slack, "ack apr_1")
    resp = await client.post("/slack/events", data=command, headers=signed(command, secret="wrong"))
    assert resp.status == 401
    await asyncio.sleep(0.2)
    assert stub.calls == [] and slack.calls == []


async def test_slack_is_off_without_a_bot_token(app_factory: AppFactory) -> None:
    client, _ = await app_factory(run_dispatcher=False)
    resp = await client.post("/slack/events", data="x", headers=signed("x"))
    assert resp.status == 404


def test_slack_config_is_checked() -> None:
    assert not SlackConfig().enabled
    with pytest.raises(ValueError, match="signing_secret"):
        SlackConfig(bot_token="env:X")
    with pytest.raises(ValueError, match="app_token"):
        SlackConfig(bot_token="env:X", socket_mode=True)
    with pytest.raises(ValueError, match="secret reference"):
        SlackConfig(bot_token="xoxb-inline-secret", signing_secret="env:Y")
    with pytest.raises(ValueError, match="pattern"):
        SlackConfig(command="ackbot")
    config = SlackConfig(bot_token="env:X", app_token="env:Z", socket_mode=True, api_base_url="http://fake/api")
    assert config.enabled and config.api_base_url == "http://fake/api/" and config.command == "/ackbot"


# ---------------------------------------------------------------- the slash command


async def command(client: Any, fake: FakeSlack, text: str, *, user: str = ALICE, name: str = "cmd") -> Any:
    """Run a slash command; the HTTP answer is the bare ack, the reply comes through the response_url."""
    body = command_body(fake, text, user=user, response=name)
    before = len(fake.calls_to("response_url"))
    resp = await client.post("/slack/events", data=body, headers=signed(body))
    assert resp.status == 200, await resp.text()
    assert (await resp.text()) == ""
    [reply] = [c for c in await fake.wait_for("response_url", before + 1) if c.path.endswith(f"/{name}")]
    return reply


async def test_help_and_unknown_sub_commands_answer_with_the_help(
    app_factory: AppFactory, database_url: str, slack: FakeSlack
) -> None:
    client, _, _ = await start(app_factory, database_url, slack, run_dispatcher=False)
    for text, name in (("help", "help"), ("", "empty"), ("frobnicate now", "unknown")):
        reply = await command(client, slack, text, name=name)
        assert reply.args["response_type"] == "ephemeral"
        assert "pending" in reply_text(reply) and "status" in reply_text(reply)
    assert "frobnicate" in reply_text(reply)


async def test_list_shows_the_top_open_alerts(app_factory: AppFactory, database_url: str, slack: FakeSlack) -> None:
    client, _, _ = await start(app_factory, database_url, slack, run_dispatcher=False)
    for i, (severity, tenant) in enumerate([("critical", "acme"), ("low", "acme"), ("high", "globex")]):
        event = {
            "kind": "k",
            "tenant": tenant,
            "severity": severity,
            "title": f"alert {severity} {tenant}",
            "id": str(i),
        }
        resp = await client.post("/api/v1/events", json=event, headers=auth())
        assert resp.status == 202
    text = reply_text(await command(client, slack, "list", name="all"))
    assert text.index("alert critical acme") < text.index("alert high globex") < text.index("alert low acme")
    text = reply_text(await command(client, slack, "list high", name="high"))
    assert "alert critical acme" in text and "alert high globex" in text and "alert low acme" not in text
    text = reply_text(await command(client, slack, "list high acme", name="high-acme"))
    assert "alert critical acme" in text and "globex" not in text.replace("tenant acme", "")
    text = reply_text(await command(client, slack, "list info nobody", name="none"))
    assert "No alerts" in text


async def test_list_and_pending_show_only_the_tenants_the_caller_sees(
    app_factory: AppFactory, database_url: str, slack: FakeSlack
) -> None:
    config = slack_config(database_url, slack)
    config.people.append(Person(name="bob", identities=Identities(slack=BOB), tenants=["acme"]))
    config.slack.unknown_user_tenants = ["globex"]
    client, _, stub = await start_with(app_factory, config, run_dispatcher=False)
    for i, tenant in enumerate(["acme", "globex", "initech"]):
        event = {"kind": "k", "tenant": tenant, "severity": "high", "title": f"alert of {tenant}", "id": str(i)}
        assert (await client.post("/api/v1/events", json=event, headers=auth())).status == 202

    text = reply_text(await command(client, slack, "list", name="alice"))
    assert all(f"alert of {tenant}" in text for tenant in ("acme", "globex", "initech"))
    text = reply_text(await command(client, slack, "list", user=BOB, name="bob"))
    assert "alert of acme" in text and "alert of globex" not in text and "alert of initech" not in text
    text = reply_text(await command(client, slack, "list high globex", user=BOB, name="bob-globex"))
    assert "Not allowed: you do not see tenant 'globex', only acme (person bob's tenants in the config)." in text
    # A workspace member ackbot does not know sees what slack.unknown_user_tenants names.
    text = reply_text(await command(client, slack, "list", user=MALLORY, name="mallory"))
    assert "alert of globex" in text and "alert of acme" not in text and "alert of initech" not in text
    text = reply_text(await command(client, slack, "list initech", user=MALLORY, name="mallory-initech"))
    assert "Not allowed: you do not see tenant 'initech', only globex (slack.unknown_user_tenants" in text

    # `pending` asks the approvals service for each tenant the caller sees, or for all of them at once.
    await command(client, slack, "pending", name="p-alice")
    await command(client, slack, "pending", user=BOB, name="p-bob")
    asked = [args for name, args in stub.calls if name == "list_pending_for"]
    assert asked == [(ALICE, None), (BOB, "acme")]


async def test_pending_and_ack_go_through_the_approvals_service(
    app_factory: AppFactory, database_url: str, slack: FakeSlack
) -> None:
    client, _, stub = await start(app_factory, database_url, slack, run_dispatcher=False)
    assert "Deploy payments" in reply_text(await command(client, slack, "pending", name="p-alice"))
    # Someone ackbot does not know sees no tenant by default (slack.unknown_user_tenants).
    refused = reply_text(await command(client, slack, "pending", user=MALLORY, name="p-m"))
    assert "Not allowed: you see no tenant (slack.unknown_user_tenants" in refused
    reply = await command(client, slack, "ack apr_1", name="ack-alice")
    assert "Acknowledged" in reply_text(reply) and reply.args["response_type"] == "ephemeral"
    # Someone who sees no tenant is refused before the service is asked.
    refused = reply_text(await command(client, slack, "ack apr_1", user=MALLORY, name="ack-m"))
    assert "Not allowed: you see no tenant" in refused
    # An alert id is acknowledged through the approval waiting on it.
    assert "Acknowledged" in reply_text(await command(client, slack, "ack alr_1", name="ack-alert"))
    assert "No approval is open on alert alr_2" in reply_text(await command(client, slack, "ack alr_2", name="ack-x"))
    assert "Usage" in reply_text(await command(client, slack, "ack", name="ack-usage"))
    decided = [args for name, args in stub.calls if name == "decide_by_id"]
    assert [(a[0], a[1], a[2].id) for a in decided] == [
        ("apr_1", Choice.acknowledge, ALICE),
        ("apr_1", Choice.acknowledge, ALICE),
    ]


async def test_test_and_status(app_factory: AppFactory, database_url: str, slack: FakeSlack) -> None:
    # Without the dispatcher's workers: core.commands.send_test delivers itself (a running worker could claim the
    # test delivery first; see the report on issue #5).
    client, _, _ = await start(app_factory, database_url, slack, run_dispatcher=False)
    text = reply_text(await command(client, slack, "test ops", name="test-ops"))
    assert "✅" in text and "ops" in text
    [post] = slack.calls_to("chat.postMessage")
    assert post.args["channel"] == "#ops" and "test notification" in post.args["text"]
    assert "No channel named nowhere" in reply_text(await command(client, slack, "test nowhere", name="test-x"))
    # Someone ackbot does not know cannot make it page people.
    assert "Only people" in reply_text(await command(client, slack, "test ops", user=MALLORY, name="test-m"))
    assert len(slack.calls_to("chat.postMessage")) == 1
    slack.fail("chat.postMessage", "channel_not_found")
    text = reply_text(await command(client, slack, "test ops", name="test-fail"))
    assert "❌" in text and "channel_not_found" in text
    text = reply_text(await command(client, slack, "status", name="status"))
    assert "console" in text and "ops" in text and "channel_not_found" in text


async def test_replies_are_public_only_when_asked(app_factory: AppFactory, database_url: str, slack: FakeSlack) -> None:
    client, _, _ = await start(app_factory, database_url, slack, run_dispatcher=False)
    reply = await command(client, slack, "status --public", name="public")
    assert reply.args["response_type"] == "in_channel"


# ---------------------------------------------------------------- button clicks


async def click(client: Any, fake: FakeSlack, value: str, **kw: Any) -> float:
    """Click a button; returns how long the HTTP answer (the ack) took."""
    body = click_body(fake, value, **kw)
    started = time.perf_counter()
    resp = await client.post("/slack/events", data=body, headers=signed(body))
    elapsed = time.perf_counter() - started
    assert resp.status == 200, await resp.text()
    return elapsed


async def test_a_click_decides_and_updates_the_clicked_message(
    app_factory: AppFactory, database_url: str, slack: FakeSlack
) -> None:
    client, _, stub = await start(app_factory, database_url, slack, run_dispatcher=False)
    await click(client, slack, "good-token")
    [update] = await slack.wait_for("response_url")
    assert update.args["replace_original"] is True
    assert "u0alice" in reply_text(update) and not [b for b in update.args["blocks"] if b["type"] == "actions"]
    [(name, (token, actor, choice, answering))] = stub.calls
    assert (name, token, choice) == ("decide", "good-token", "acknowledge")
    assert actor == Actor(platform="slack", id=ALICE, display_name="u0alice")
    # The message the click came from, named as the Slack channel records a posted message.
    assert answering == {"channel": "C0OPS", "ts": "1700000000.000001"}


async def test_a_refused_click_is_told_privately(app_factory: AppFactory, database_url: str, slack: FakeSlack) -> None:
    client, _, stub = await start(app_factory, database_url, slack, run_dispatcher=False)
    await click(client, slack, "good-token", user=MALLORY, response="mallory")
    await click(client, slack, "forged", response="forged")
    await click(client, slack, "good-token", response="first")
    await click(client, slack, "good-token", response="replay")
    replies = {c.path.rsplit("/", 1)[1]: c for c in await slack.wait_for("response_url", 4)}
    for name, words in (("mallory", "not an approver"), ("forged", "not valid"), ("replay", "already decided")):
        assert replies[name].args["response_type"] == "ephemeral", name
        assert replies[name].args["replace_original"] is False, name
        assert words in reply_text(replies[name]), name
    assert replies["first"].args["replace_original"] is True
    assert len(stub.calls) == 4


async def test_link_buttons_are_acknowledged(app_factory: AppFactory, database_url: str, slack: FakeSlack) -> None:
    client, _, stub = await start(app_factory, database_url, slack, run_dispatcher=False)
    await click(client, slack, "", action_id="ackbot.open.acknowledge")
    await click(client, slack, "", action_id="ackbot.open_digest")
    await asyncio.sleep(0.1)
    assert stub.calls == [] and slack.calls_to("response_url") == []


async def test_ack_comes_before_the_slow_work(app_factory: AppFactory, database_url: str, slack: FakeSlack) -> None:
    client, _, stub = await start(app_factory, database_url, slack, run_dispatcher=False)
    await click(client, slack, "warm-up", response="warm")  # the first request also makes Bolt's auth.test
    await slack.wait_for("response_url")
    stub.delay = 3.5  # a decision slower than Slack's 3 seconds
    elapsed = await click(client, slack, "good-token", response="slow")
    assert elapsed < 1.0, f"the ack took {elapsed:.2f}s"
    [_, update] = await slack.wait_for("response_url", 2, within=10)
    assert update.args["replace_original"] is True


# ---------------------------------------------------------------- Socket Mode


async def test_socket_mode_serves_commands_and_clicks_over_the_websocket(
    app_factory: AppFactory, database_url: str, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACKBOT_TEST_SLACK_APP_TOKEN", slack.app_token)
    settings = slack_settings(slack, socket_mode=True, app_token="env:ACKBOT_TEST_SLACK_APP_TOKEN")
    del settings["signing_secret"]  # not needed: nothing reaches ackbot over HTTP
    config = slack_config(database_url, slack)
    config = config.model_copy(update={"slack": SlackConfig.model_validate(settings)})
    client, runtime = await app_factory(config, run_dispatcher=False)
    stub = StubApprovals(runtime.approvals)
    runtime.approvals = stub
    await slack.wait_for_socket()
    [opened] = slack.calls_to("apps.connections.open")
    assert opened.headers["Authorization"] == f"Bearer {slack.app_token}"
    # No HTTP endpoint in Socket Mode: the WebSocket is the only way in.
    resp = await client.post("/slack/events", data="x", headers=signed("x"))
    assert resp.status == 404

    # Socket Mode carries the same payloads as HTTP, as JSON and unsigned.
    payload = dict(parse_qsl(command_body(slack, "help", response="socket-help")))
    envelope = await slack.send_envelope("slash_commands", payload)
    acks = await slack.wait_for("socket_ack")
    assert acks[0].args["envelope_id"] == envelope
    [reply] = await slack.wait_for("response_url")
    assert reply.path.endswith("/socket-help") and "pending" in reply_text(reply)

    click = json.loads(dict(parse_qsl(click_body(slack, "good-token", response="socket-click")))["payload"])
    envelope = await slack.send_envelope("interactive", click)
    acks = await slack.wait_for("socket_ack", 2)
    assert acks[1].args["envelope_id"] == envelope
    [_, update] = await slack.wait_for("response_url", 2)
    assert update.path.endswith("/socket-click") and update.args["replace_original"] is True
    assert [name for name, _ in stub.calls] == ["decide"]
