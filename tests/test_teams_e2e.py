"""End to end with the real approvals service: an approval posted proactively to a Teams channel and a person's
1:1 chat, clicks as Teams sends them (Action.Execute invokes, Action.Submit messages), refusals with their reason,
the decided card in the invoke answer, and update_activity on every other message of the approval."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from core.clock import ManualClock
from tests.conftest import TENANT_KEY, AppFactory, auth
from tests.peers.fake_connector import (
    ALICE,
    MALLORY,
    OPS_ID,
    FakeConnector,
    Recorded,
    card_action,
    message,
)
from tests.test_teams import assert_all_cards_valid, assert_valid_card, install_ops, post_activity, teams_config, texts

BOB = "cccccccc-3333-4333-8333-333333333333"
PEOPLE = [
    {"name": "alice", "display_name": "Alice", "identities": {"teams": ALICE}},
    {"name": "bob", "display_name": "Bob", "identities": {"teams": BOB}},
]
ADAPTIVE = "application/vnd.microsoft.card.adaptive"


@pytest.fixture
async def connector() -> AsyncIterator[FakeConnector]:
    async with FakeConnector() as fake:
        yield fake


def buttons(card: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The Action.Execute buttons of a card, by verb."""
    return {a["verb"]: a for a in card.get("actions") or [] if a.get("type") == "Action.Execute"}


async def open_approval(client: TestClient[Any, Any], targets: list[str]) -> dict[str, Any]:
    body = {"title": "Deploy payments 1.2.3 to prod?", "approvers": ["alice"], "targets": targets}
    resp = await client.post("/api/v1/approvals", json=body, headers=auth(TENANT_KEY))
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def click(
    client: TestClient[Any, Any],
    connector: FakeConnector,
    posted: Recorded,
    *,
    verb: str = "acknowledge",
    who: dict[str, Any],
) -> tuple[dict[str, Any], float]:
    """Click a button of a posted card as `who`; the invoke answer's body and how long it took."""
    data = buttons(posted.card)[verb]["data"]
    invoke = card_action(
        connector.service_url,
        verb=verb,
        data=data,
        conversation_id=posted.conversation_id,
        reply_to=posted.activity_id,
        sender=who,
    )
    started = time.perf_counter()
    resp = await post_activity(client, invoke)
    elapsed = time.perf_counter() - started
    assert resp.status == 200, await resp.text()
    return dict(await resp.json()), elapsed


def person(aad: str, name: str) -> dict[str, Any]:
    return {"id": f"29:{name.lower()}", "name": name, "aadObjectId": aad}


async def test_an_approval_is_decided_from_teams_and_every_message_updated(
    app_factory: AppFactory, database_url: str, connector: FakeConnector
) -> None:
    client, runtime = await app_factory(teams_config(database_url, people=PEOPLE))
    await install_ops(client, connector)
    approval = await open_approval(client, ["ops", "person:bob"])

    # Posted proactively: to the Ops channel, and to bob's 1:1 chat (created through the connector).
    posted = await connector.wait_for("sent", 2)
    by_conversation = {p.conversation_id: p for p in posted}
    ops, bobs = by_conversation[OPS_ID], by_conversation[f"a:1on1-{BOB}"]
    assert connector.created[0]["members"] == [{"id": BOB}]
    for record in posted:
        assert_valid_card(record.card)
        assert set(buttons(record.card)) >= {"acknowledge", "deny"}
        assert record.card["refresh"]["action"]["data"] == {"approval_id": approval["id"]}

    # Nobody ackbot knows: refused, the card is shown unchanged (buttons and all) with the reason.
    answer, _ = await click(client, connector, ops, who=person(MALLORY, "Mallory"))
    assert answer["statusCode"] == 200 and answer["type"] == ADAPTIVE
    assert set(buttons(answer["value"])) == set(buttons(ops.card)) and "⚠️" in texts(answer["value"])
    assert_valid_card(answer["value"])
    # Bob is known but not an approver: refused, and told so.
    answer, _ = await click(client, connector, bobs, who=person(BOB, "Bob"))
    assert "approver" in texts(answer["value"]).lower() and buttons(answer["value"])
    assert not connector.updated

    # Alice decides: the invoke answer is the decided card (outcome, who, when; no buttons).
    answer, elapsed = await click(client, connector, ops, who=person(ALICE, "Alice"))
    decided = answer["value"]
    assert_valid_card(decided)
    assert not buttons(decided) and "Acknowledged" in texts(decided) and "alice" in texts(decided).lower()
    assert elapsed < 5.0, f"Teams gives an invoke 5 seconds; this one took {elapsed:.2f}s"

    # The approvals service's resume updates every message of the approval: update_activity on each.
    updated = await connector.wait_for("updated", 2)
    assert {(u.conversation_id, u.activity_id) for u in updated} == {
        (OPS_ID, ops.activity_id),
        (bobs.conversation_id, bobs.activity_id),
    }
    for record in updated:
        assert not buttons(record.card) and "Acknowledged" in texts(record.card)

    # A second click on the spent button: refused with who decided it.
    answer, _ = await click(client, connector, ops, who=person(ALICE, "Alice"))
    assert "⚠️" in texts(answer["value"]) and not buttons(answer["value"])

    # Refresh shows the decided card to anyone opening the conversation later.
    refresh = card_action(connector.service_url, verb="refresh", data={"approval_id": approval["id"]})
    answer = await (await post_activity(client, refresh)).json()
    assert not buttons(answer["value"]) and "Acknowledged" in texts(answer["value"])

    view = await (await client.get(f"/api/v1/approvals/{approval['id']}", headers=auth(TENANT_KEY))).json()
    assert view["state"] == "acknowledged" and view["decided_by"] == "alice"
    assert_all_cards_valid(connector)
    del runtime


async def test_action_submit_takes_the_same_path(
    app_factory: AppFactory, database_url: str, connector: FakeConnector
) -> None:
    client, runtime = await app_factory(teams_config(database_url, people=PEOPLE))
    await install_ops(client, connector)
    await open_approval(client, ["ops"])
    (ops,) = await connector.wait_for("sent", 1)
    # A client older than card 1.5 runs the Action.Submit fallback: a message whose value is the button's data.
    fallback = buttons(ops.card)["deny"]["fallback"]
    assert fallback["type"] == "Action.Submit"
    thread = {"id": f"{OPS_ID};messageid={ops.activity_id}", "conversationType": "channel"}
    submit = message(connector.service_url, "", conversation=thread, value=fallback["data"], reply_to=ops.activity_id)
    assert (await post_activity(client, submit)).status == 201
    # The clicked message is edited in place with the decided card (and the resume updates it too).
    edited = (await connector.wait_for("updated", 1))[0]
    assert edited.activity_id == ops.activity_id
    assert not buttons(edited.card) and "Denied" in texts(edited.card)
    assert_all_cards_valid(connector)
    del runtime


async def test_pending_and_ack_commands_use_the_approvals_service(
    app_factory: AppFactory, database_url: str, connector: FakeConnector
) -> None:
    client, runtime = await app_factory(teams_config(database_url, people=PEOPLE))
    await install_ops(client, connector)
    approval = await open_approval(client, ["ops"])
    await connector.wait_for("sent", 1)
    await post_activity(client, message(connector.service_url, "pending"))
    assert "Deploy payments 1.2.3 to prod?" in texts(connector.replies[-1].card)
    await post_activity(client, message(connector.service_url, "pending", sender=person(BOB, "Bob")))
    assert "No approvals waiting" in texts(connector.replies[-1].card)
    await post_activity(client, message(connector.service_url, f"ack {approval['id']}", sender=person(BOB, "Bob")))
    assert "approver" in texts(connector.replies[-1].card).lower()
    await post_activity(client, message(connector.service_url, f"ack {approval['id']}"))
    reply = connector.replies[-1].card
    assert "Acknowledged" in texts(reply) and not buttons(reply)
    assert_all_cards_valid(connector)
    del runtime


async def test_a_click_after_expiry_is_refused_with_the_reason(
    app_factory: AppFactory, database_url: str, connector: FakeConnector
) -> None:
    clock = ManualClock(datetime.now(UTC))
    client, _ = await app_factory(teams_config(database_url, people=PEOPLE), clock=clock)
    await install_ops(client, connector)
    body = {"title": "Rotate the signing key?", "approvers": ["alice"], "targets": ["ops"], "timeout": "5m"}
    assert (await client.post("/api/v1/approvals", json=body, headers=auth(TENANT_KEY))).status == 201
    (ops,) = await connector.wait_for("sent", 1)
    clock.advance(timedelta(minutes=10))
    answer, _ = await click(client, connector, ops, who=person(ALICE, "Alice"))
    shown = texts(answer["value"])
    assert "⚠️ This button or link has expired" in shown and "expired 5m ago" in shown
    assert_valid_card(answer["value"])
