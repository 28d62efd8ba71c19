"""The Teams bot over real HTTP: installs, the "teams" channel against a fake Bot Framework connector, retries,
1:1 chats, card actions (Action.Execute invokes, refresh, Action.Submit), text commands, and authentication."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from bot.cli import main as cli_main
from bot.teams import bot_of
from bot.teams.bot import CachingCredentialsFactory, _is_loopback
from core.channels.base import Notification
from core.channels.errors import PermanentChannelError, TransientChannelError
from core.config import AckbotConfig
from core.models.deliveries import DeliveryPurpose
from core.runtime import Runtime
from core.store import conversations as conversation_store
from core.store.tables import DeliveryRow
from tests.card_checks import adaptive_card_validator
from tests.conftest import TENANT_KEY, AppFactory, auth, make_config
from tests.peers.fake_connector import (
    ALICE,
    BOT_ID,
    OPS_ID,
    TEAM_ID,
    TENANT,
    FakeConnector,
    card_action,
    channel_created,
    installed_in_team,
    message,
    personal_install,
    removed_from_team,
)

EVENT = {"kind": "deploy.failed", "tenant": "acme", "severity": "high", "title": "deploy of api failed"}
APP_ID = "00000000-1111-4222-8333-444444444444"

# ---------------------------------------------------------------- helpers


def teams_config(database_url: str, **overrides: Any) -> AckbotConfig:
    """Alerts go to the "ops" Teams channel (Platform/Ops); alice is a person with a Teams identity."""
    data: dict[str, Any] = {
        "channels": [{"name": "ops", "type": "teams", "settings": {"conversation": "Platform/Ops"}}],
        "rules": [{"name": "to-teams", "actions": [{"channel": "ops"}]}],
        "people": [{"name": "alice", "display_name": "Alice", "identities": {"teams": ALICE}}],
    }
    data.update(overrides)
    return make_config(database_url, **data)


def assert_valid_card(card: dict[str, Any]) -> None:
    """An Adaptive Card 1.5 that the official schema accepts."""
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.5"
    errors = sorted(adaptive_card_validator().iter_errors(card), key=lambda e: list(e.path))
    assert not errors, "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


def assert_all_cards_valid(connector: FakeConnector) -> None:
    """Every card the bot sent, replied or updated validates against the official schema."""
    for record in [*connector.sent, *connector.replies, *connector.updated]:
        for card in record.cards:
            assert_valid_card(card)


def texts(card: dict[str, Any]) -> str:
    """Every TextBlock and fact of a card, joined: what a person reads."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "TextBlock":
                out.append(str(node.get("text", "")))
            if node.get("type") == "FactSet":
                out.extend(f"{f.get('title')}: {f.get('value')}" for f in node.get("facts", []))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(card.get("body", []))
    return "\n".join(out)


async def post_activity(client: TestClient[Any, Any], activity: dict[str, Any], **headers: str) -> Any:
    return await client.post(
        "/api/messages", data=json.dumps(activity), headers={"Content-Type": "application/json", **headers}
    )


async def install_ops(client: TestClient[Any, Any], connector: FakeConnector) -> None:
    """The app installed in team Platform, then the Ops channel created: both become targets."""
    for activity in installed_in_team(connector.service_url):
        assert (await post_activity(client, activity)).status in (200, 201)
    assert (await post_activity(client, channel_created(connector.service_url))).status in (200, 201)


async def conversations(runtime: Runtime) -> dict[str, conversation_store.TeamsConversation]:
    async with runtime.db.read() as session:
        found = await conversation_store.list_conversations(session=session)
    return {c.conversation_id: c for c in found}


async def sent_deliveries(runtime: Runtime, count: int = 1, within: float = 10.0) -> list[DeliveryRow]:
    async with asyncio.timeout(within):
        while True:
            async with runtime.db.read() as session:
                rows = list((await session.execute(select(DeliveryRow).where(DeliveryRow.status == "sent"))).scalars())
            if len(rows) >= count:
                return rows
            await asyncio.sleep(0.02)


def note(**fields: Any) -> Notification:
    base: dict[str, Any] = {
        "delivery_id": "dlv_test",
        "idempotency_key": "key",
        "tenant": "acme",
        "purpose": DeliveryPurpose.notify,
        "channel": "ops",
        "extra": {"title": "hello from a test", "summary": "body"},
    }
    base.update(fields)
    return Notification(**base)


@pytest.fixture
async def connector() -> Any:
    async with FakeConnector() as fake:
        yield fake


# ---------------------------------------------------------------- installs and conversation references


async def test_install_stores_conversation_references(
    app_factory: AppFactory, database_url: str, connector: FakeConnector, tmp_path: Path, capsys: Any
) -> None:
    client, runtime = await app_factory(teams_config(database_url), run_dispatcher=False)
    await install_ops(client, connector)
    stored = await conversations(runtime)
    assert set(stored) == {TEAM_ID, OPS_ID}
    general, ops = stored[TEAM_ID], stored[OPS_ID]
    assert (general.name, general.kind, general.team_name, general.channel_name) == (
        "Platform/General",
        "channel",
        "Platform",
        "General",
    )
    assert ops.name == "Platform/Ops" and ops.team_id == TEAM_ID and ops.installed
    assert ops.service_url == connector.service_url and ops.tenant_id == TENANT
    assert ops.reference["conversation"]["id"] == OPS_ID and ops.reference["bot"]["id"] == BOT_ID
    # The welcome tells operators the name to use; it is a reply in the General channel.
    (welcome,) = connector.replies
    assert welcome.conversation_id == TEAM_ID and "conversation: Platform/General" in texts(welcome.card)
    assert_all_cards_valid(connector)

    # A message in a thread of a channel: stored under the channel, never the thread (;messageid=...).
    thread = {"id": f"{OPS_ID};messageid=1700000000000", "conversationType": "channel"}
    resp = await post_activity(client, message(connector.service_url, "help", conversation=thread, mention=True))
    assert resp.status == 201
    assert set(await conversations(runtime)) == {TEAM_ID, OPS_ID}
    assert (await conversations(runtime))[OPS_ID].name == "Platform/Ops"  # a message carries no names: kept

    # `ackbot teams conversations` lists them for operators.
    config_file = tmp_path / "ackbot.yml"
    config_file.write_text(json.dumps({"database": {"url": database_url}}))
    assert await asyncio.to_thread(cli_main, ["teams", "conversations", "--config", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert "Platform/Ops" in out and OPS_ID in out and "Platform/General" in out

    # Uninstalled from the team: every conversation of the team is marked removed, and listed as such.
    assert (await post_activity(client, removed_from_team(connector.service_url))).status == 201
    assert not any(c.installed for c in (await conversations(runtime)).values())
    listing = ["teams", "conversations", "--config", str(config_file), "--json"]
    assert await asyncio.to_thread(cli_main, [*listing, "--all"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {c["name"] for c in listed} == {"Platform/General", "Platform/Ops"}
    assert all(c["installed"] is False for c in listed)
    assert await asyncio.to_thread(cli_main, listing) == 0
    assert json.loads(capsys.readouterr().out) == []


async def test_personal_install_is_stored_under_the_persons_name(
    app_factory: AppFactory, database_url: str, connector: FakeConnector
) -> None:
    client, runtime = await app_factory(teams_config(database_url), run_dispatcher=False)
    assert (await post_activity(client, personal_install(connector.service_url))).status == 201
    (personal,) = (await conversations(runtime)).values()
    assert personal.kind == "personal" and personal.user_aad_id == ALICE and personal.name == "user:Alice"


# ---------------------------------------------------------------- the channel: post, update, pacing, errors


async def test_event_is_posted_proactively_as_a_card(
    app_factory: AppFactory, database_url: str, connector: FakeConnector
) -> None:
    client, runtime = await app_factory(teams_config(database_url))
    await install_ops(client, connector)
    resp = await client.post("/api/v1/events", json=EVENT, headers=auth(TENANT_KEY))
    assert resp.status == 202
    (posted,) = await connector.wait_for("sent", 1)
    # A new top-level post in the channel (POST /v3/conversations/{id}/activities), not a reply to anything.
    assert posted.conversation_id == OPS_ID and posted.reply_to is None
    assert posted.activity["type"] == "message" and posted.activity["summary"] == "deploy of api failed"
    assert posted.activity["conversation"]["id"] == OPS_ID
    card = posted.card
    assert_valid_card(card)
    assert "deploy of api failed" in texts(card)
    assert len(json.dumps(posted.activity).encode()) < 40 * 1024
    (row,) = await sent_deliveries(runtime)
    assert row.message_ref == {
        "conversation_id": OPS_ID,
        "activity_id": posted.activity_id,
        "service_url": connector.service_url,
        "tenant_id": TENANT,
    }
    # Paced by conversation: two channel names for one conversation share one bucket.
    channel = runtime.channels["ops"]
    assert channel.destination(note()) == f"teams:{OPS_ID}"
    assert channel.rate_per_second == 7.0


async def test_update_replaces_the_card_in_place(
    app_factory: AppFactory, database_url: str, connector: FakeConnector
) -> None:
    client, runtime = await app_factory(teams_config(database_url), run_dispatcher=False)
    await install_ops(client, connector)
    channel = runtime.channels["ops"]
    sent = await channel.send(note())
    assert sent.message_ref is not None
    updated = await channel.update(sent.message_ref, note(extra={"title": "now resolved", "summary": "done"}))
    assert updated.message_ref == sent.message_ref
    (record,) = connector.updated
    assert record.conversation_id == OPS_ID and record.activity_id == sent.message_ref["activity_id"]
    assert "now resolved" in texts(record.card)
    assert_all_cards_valid(connector)


@pytest.mark.parametrize("status", [429, 412, 502, 504, 500])
async def test_throttling_and_gateway_errors_are_retried(
    app_factory: AppFactory, database_url: str, connector: FakeConnector, status: int
) -> None:
    client, runtime = await app_factory(teams_config(database_url), run_dispatcher=False)
    await install_ops(client, connector)
    channel = runtime.channels["ops"]
    connector.fail_next(status, retry_after="3" if status == 429 else None)
    with pytest.raises(TransientChannelError) as raised:
        await channel.send(note())
    assert raised.value.status_code == status
    if status == 429:
        assert raised.value.retry_after == 3.0
    assert "HTTP" in str(raised.value) and str(status) in str(raised.value)
    # The next attempt goes through.
    assert (await channel.send(note())).message_ref is not None


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_other_client_errors_are_permanent(
    app_factory: AppFactory, database_url: str, connector: FakeConnector, status: int
) -> None:
    client, runtime = await app_factory(teams_config(database_url), run_dispatcher=False)
    await install_ops(client, connector)
    connector.fail_next(status)
    with pytest.raises(PermanentChannelError) as raised:
        await runtime.channels["ops"].send(note())
    assert raised.value.status_code == status


async def test_the_dispatcher_retries_a_429_and_delivers(
    app_factory: AppFactory, database_url: str, connector: FakeConnector
) -> None:
    client, runtime = await app_factory(teams_config(database_url))
    await install_ops(client, connector)
    connector.fail_next(429, retry_after="0")
    assert (await client.post("/api/v1/events", json=EVENT, headers=auth(TENANT_KEY))).status == 202
    await connector.wait_for("sent", 1, within=15)
    (row,) = await sent_deliveries(runtime, within=15)
    assert row.attempts == 2
    posts = [path for method, path in connector.requests if method == "POST" and path.endswith(f"{OPS_ID}/activities")]
    assert len(posts) == 2


async def test_unknown_or_removed_conversations_and_network_errors(
    app_factory: AppFactory, database_url: str, connector: FakeConnector
) -> None:
    client, runtime = await app_factory(teams_config(database_url), run_dispatcher=False)
    channel = runtime.channels["ops"]
    with pytest.raises(PermanentChannelError, match="no Teams conversation named 'Platform/Ops'"):
        await channel.send(note())
    await install_ops(client, connector)
    # The connector is down: a network error, worth another attempt.
    port = connector.port
    await connector.__aexit__(None, None, None)
    with pytest.raises(TransientChannelError):
        await channel.send(note())
    connector.port = port
    await post_activity(client, removed_from_team(f"http://127.0.0.1:{port}/"))
    with pytest.raises(PermanentChannelError, match="removed"):
        await channel.send(note())


async def test_a_person_target_opens_a_one_to_one_chat(
    app_factory: AppFactory, database_url: str, connector: FakeConnector
) -> None:
    client, runtime = await app_factory(teams_config(database_url), run_dispatcher=False)
    await install_ops(client, connector)  # tells ackbot the tenant's service URL
    channel = runtime.channels["ops"]
    first = await channel.send(note(target="person:alice"))
    (created,) = connector.created
    assert created["isGroup"] is False and created["members"] == [{"id": ALICE}]
    # The SDK writes "tenantID" (the connector reads keys case-insensitively); channelData.tenant is what Teams reads.
    assert created["tenantID"] == TENANT and created["channelData"] == {"tenant": {"id": TENANT}}
    assert created["bot"]["id"] == BOT_ID
    assert first.message_ref is not None and first.message_ref["conversation_id"] == f"a:1on1-{ALICE}"
    # The chat is stored and reused: no second create.
    await channel.send(note(target=f"aad:{ALICE}"))
    await channel.send(note(target=ALICE))
    assert len(connector.created) == 1 and len(connector.sent) == 3
    personal = (await conversations(runtime))[f"a:1on1-{ALICE}"]
    assert personal.kind == "personal" and personal.name == "user:alice"
    with pytest.raises(PermanentChannelError, match="no person named 'bob'"):
        await channel.send(note(target="person:bob"))


async def test_an_oversized_message_is_refused(
    app_factory: AppFactory, database_url: str, connector: FakeConnector
) -> None:
    client, runtime = await app_factory(teams_config(database_url), run_dispatcher=False)
    await install_ops(client, connector)
    channel = runtime.channels["ops"]
    # The renderer keeps cards under 38 KB; a renderer that did not is caught before Teams refuses it.
    runtime.renderers["teams"] = lambda _note: {"type": "AdaptiveCard", "version": "1.5", "body": [{"x": "y" * 50_000}]}
    with pytest.raises(PermanentChannelError, match="over the 40960 bytes"):
        await channel.send(note())
    assert not connector.sent


# ---------------------------------------------------------------- refresh and clicks


async def test_refresh_returns_the_current_card(
    app_factory: AppFactory, database_url: str, connector: FakeConnector
) -> None:
    client, runtime = await app_factory(teams_config(database_url))
    await install_ops(client, connector)
    body = await (await client.post("/api/v1/events", json=EVENT, headers=auth(TENANT_KEY))).json()
    (posted,) = await connector.wait_for("sent", 1)
    assert posted.card["refresh"]["action"]["data"] == {"alert_id": body["alert_id"]}
    await sent_deliveries(runtime)
    invoke = card_action(
        connector.service_url, verb="refresh", data={"alert_id": body["alert_id"]}, reply_to=posted.activity_id
    )
    resp = await post_activity(client, invoke)
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert answer["statusCode"] == 200 and answer["type"] == "application/vnd.microsoft.card.adaptive"
    assert_valid_card(answer["value"])
    assert "deploy of api failed" in texts(answer["value"])
    # Something ackbot does not know: a card that says so, never an error page.
    unknown = card_action(connector.service_url, verb="refresh", data={"alert_id": "alr_nope"})
    answer = await (await post_activity(client, unknown)).json()
    assert "no longer knows" in texts(answer["value"])


async def test_a_click_without_a_token_or_identity_is_refused(
    app_factory: AppFactory, database_url: str, connector: FakeConnector
) -> None:
    client, _ = await app_factory(teams_config(database_url), run_dispatcher=False)
    resp = await post_activity(client, card_action(connector.service_url, verb="acknowledge", data={}))
    assert resp.status == 200
    answer = await resp.json()
    assert answer["statusCode"] == 400 and answer["type"] == "application/vnd.microsoft.error"
    anonymous = card_action(
        connector.service_url, verb="acknowledge", data={"token": "t"}, sender={"id": "29:x", "name": "X"}
    )
    answer = await (await post_activity(client, anonymous)).json()
    assert answer["statusCode"] == 401


# ---------------------------------------------------------------- text commands


async def test_commands_in_a_chat_and_by_mention(
    app_factory: AppFactory, database_url: str, connector: FakeConnector
) -> None:
    client, runtime = await app_factory(teams_config(database_url), run_dispatcher=False)
    await install_ops(client, connector)
    replies_before = len(connector.replies)
    assert (await post_activity(client, message(connector.service_url, "help"))).status == 201
    (reply,) = (await connector.wait_for("replies", replies_before + 1))[replies_before:]
    assert "pending: the approvals waiting for your decision" in texts(reply.card)

    # An alert, then `@ackbot list` in a channel thread: the mention is stripped, the reply goes to the thread.
    assert (await client.post("/api/v1/events", json=EVENT, headers=auth(TENANT_KEY))).status == 202
    thread = {"id": f"{OPS_ID};messageid=42", "conversationType": "channel"}
    await post_activity(client, message(connector.service_url, "list", conversation=thread, mention=True))
    reply = connector.replies[-1]
    assert reply.conversation_id == f"{OPS_ID};messageid=42"
    assert "Open alerts" in texts(reply.card) and "deploy of api failed" in texts(reply.card)

    await post_activity(client, message(connector.service_url, "status"))
    assert "ops" in texts(connector.replies[-1].card)
    await post_activity(client, message(connector.service_url, "frobnicate"))
    assert "Unknown command 'frobnicate'" in texts(connector.replies[-1].card)
    # `test` reaches real receivers: only people the config knows may send one.
    stranger = {"id": "29:m", "name": "Mallory", "aadObjectId": "bbbbbbbb-2222-4222-8222-222222222222"}
    await post_activity(client, message(connector.service_url, "test ops", sender=stranger))
    assert "Only people listed" in texts(connector.replies[-1].card)
    await post_activity(client, message(connector.service_url, "test ops"))
    assert "Test notification sent through ops" in texts(connector.replies[-1].card)
    assert connector.sent[-1].conversation_id == OPS_ID
    assert_all_cards_valid(connector)
    del runtime


async def test_list_and_pending_show_only_the_tenants_the_caller_sees(
    app_factory: AppFactory, database_url: str, connector: FakeConnector
) -> None:
    config = teams_config(
        database_url,
        people=[{"name": "alice", "identities": {"teams": ALICE}, "tenants": ["acme"]}],
        teams={"unknown_user_tenants": ["globex"]},
    )
    client, _ = await app_factory(config, run_dispatcher=False)
    for tenant in ("acme", "globex"):
        event = {**EVENT, "tenant": tenant, "title": f"alert of {tenant}"}
        assert (await client.post("/api/v1/events", json=event, headers=auth())).status == 202
        request = {"tenant": tenant, "title": f"approve for {tenant}?", "approvers": ["alice"], "targets": ["ops"]}
        assert (await client.post("/api/v1/approvals", json=request, headers=auth())).status in (200, 201, 202)

    async def say(text: str, sender: dict[str, Any] | None = None) -> str:
        assert (await post_activity(client, message(connector.service_url, text, sender=sender))).status == 201
        return texts(connector.replies[-1].card)

    listed = await say("list")
    assert "alert of acme" in listed and "alert of globex" not in listed
    refused = await say("list globex")
    assert "Not allowed: you do not see tenant 'globex', only acme (person alice's tenants in the config)." in refused
    waiting = await say("pending")
    assert "approve for acme?" in waiting and "approve for globex?" not in waiting
    # A Teams user ackbot does not know sees what teams.unknown_user_tenants names, and may decide nothing.
    stranger = {"id": "29:m", "name": "Mallory", "aadObjectId": "bbbbbbbb-2222-4222-8222-222222222222"}
    listed = await say("list", stranger)
    assert "alert of globex" in listed and "alert of acme" not in listed
    assert "teams.unknown_user_tenants" in await say("list acme", stranger)
    assert "approve for" not in await say("pending", stranger)
    assert_all_cards_valid(connector)


# ---------------------------------------------------------------- authentication


async def test_with_an_app_id_bad_authorization_is_401_never_500(app_factory: AppFactory, database_url: str) -> None:
    os.environ["ACKBOT_TEST_TEAMS_PASSWORD"] = "not-a-real-secret"
    try:
        config = teams_config(database_url, teams={"app_id": APP_ID, "app_password": "env:ACKBOT_TEST_TEAMS_PASSWORD"})
        client, _ = await app_factory(config, run_dispatcher=False)
        activity = message("https://smba.trafficmanager.net/teams/", "help")
        untrusted = jwt.encode({"iss": "https://evil.example", "aud": APP_ID}, "k" * 32, algorithm="HS256")
        for header in [None, "", "Bearer abc", "Basic x", "garbage", "Bearer", "Bearer a.b.c", f"Bearer {untrusted}"]:
            headers = {} if header is None else {"Authorization": header}
            resp = await post_activity(client, activity, **headers)
            assert resp.status == 401, (header, resp.status, await resp.text())
            assert "error" in await resp.json()
    finally:
        del os.environ["ACKBOT_TEST_TEAMS_PASSWORD"]


async def test_without_an_app_id_auth_is_off_and_said_loudly(
    app_factory: AppFactory, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ackbot.teams"):
        client, runtime = await app_factory(teams_config(database_url), run_dispatcher=False)
    assert any("AUTHENTICATION IS OFF" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    bot = bot_of(runtime)
    assert bot is not None and not bot.auth_enabled
    # Only loopback callers are served while authentication is off.
    assert _is_loopback("127.0.0.1") and _is_loopback("::1")
    assert not _is_loopback("10.0.0.7") and not _is_loopback(None) and not _is_loopback("not-an-ip")
    # Bad requests are 4xx, never 500.
    resp = await client.post("/api/messages", data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status == 400
    resp = await client.post("/api/messages", data=b"[]", headers={"Content-Type": "application/json"})
    assert resp.status == 400
    resp = await client.post("/api/messages", data=b"{}", headers={"Content-Type": "application/json"})
    assert resp.status == 400
    resp = await client.post("/api/messages", data=b"hello", headers={"Content-Type": "text/plain"})
    assert resp.status == 415


def test_teams_config_is_checked() -> None:
    base: dict[str, Any] = {"database": {"url": "sqlite+aiosqlite:///x.db"}}
    with pytest.raises(ValueError, match="app_password"):
        AckbotConfig.model_validate({**base, "teams": {"app_id": APP_ID}})
    with pytest.raises(ValueError, match="app_tenant_id"):
        AckbotConfig.model_validate(
            {**base, "teams": {"app_id": APP_ID, "app_password": "env:X", "app_type": "SingleTenant"}}
        )
    with pytest.raises(ValueError, match="secret reference"):
        AckbotConfig.model_validate({**base, "teams": {"app_id": APP_ID, "app_password": "inline-secret"}})
    ok = AckbotConfig.model_validate(
        {**base, "teams": {"app_id": APP_ID, "certificate_thumbprint": "AB12", "certificate_private_key": "file:/k"}}
    )
    assert ok.teams.auth_enabled


async def test_credentials_are_reused_and_tokens_fetched_off_the_event_loop() -> None:
    class Credentials:
        def __init__(self) -> None:
            self.threads: list[int] = []

        def get_access_token(self) -> str:
            self.threads.append(threading.get_ident())
            return "token"

    class Inner:
        created = 0

        async def is_valid_app_id(self, app_id: str) -> bool:
            return app_id == APP_ID

        async def is_authentication_disabled(self) -> bool:
            return False

        async def create_credentials(self, app_id: str, scope: str, endpoint: str, validate: bool) -> Credentials:
            Inner.created += 1
            return Credentials()

    factory = CachingCredentialsFactory(Inner())
    first = await factory.create_credentials(APP_ID, "https://api.botframework.com", "https://login", True)
    again = await factory.create_credentials(APP_ID, "https://api.botframework.com", "https://login", True)
    assert first is again and Inner.created == 1
    # MSAL's synchronous HTTP runs on a worker thread, never on the loop's.
    assert len(first.threads) == 2 and threading.get_ident() not in first.threads
    assert await factory.is_valid_app_id(APP_ID) and not await factory.is_authentication_disabled()
