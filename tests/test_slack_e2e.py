"""End to end through Slack with the real approvals service, dispatcher and database.

An event matches a rule whose action asks for an approval -> the dispatcher posts a message with buttons to the
fake Slack -> a signed block_actions click comes back -> the decision is recorded -> chat.update shows it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import select

from core.models.approvals import ApprovalState
from core.models.deliveries import DeliveryPurpose, DeliveryStatus
from core.store.tables import DeliveryRow
from tests.conftest import AppFactory, auth, make_config
from tests.peers.fake_slack import Call, FakeSlack
from tests.test_slack_app import ALICE, MALLORY, click, command, reply_text, signed, slack, slack_settings

__all__ = ["slack"]  # the fixture, shared with test_slack_app

BOB = "U0BOB"  # known to ackbot, but not an approver

EVENT = {
    "kind": "deploy.requested",
    "tenant": "acme",
    "severity": "high",
    "title": "Deploy payments 1.2.3 to prod",
    "summary": "Release train 42",
    "scope": {"namespace": "prod", "repo": "acme/payments"},
}


def e2e_config(database_url: str, fake: FakeSlack, **approval: Any) -> Any:
    return make_config(
        database_url,
        slack=slack_settings(fake),
        people=[
            {"name": "alice", "display_name": "Alice", "identities": {"slack": ALICE}},
            {"name": "bob", "display_name": "Bob", "identities": {"slack": BOB}},
        ],
        groups=[{"name": "release-managers", "members": ["alice"]}],
        channels=[{"name": "ops", "type": "slack", "settings": {"channel": "#ops"}}],
        rules=[
            {
                "name": "deploys",
                "match": {"kinds": ["deploy.*"]},
                "actions": [{"channel": "ops", "approval": {"approvers": ["release-managers"], **approval}}],
            }
        ],
    )


def button_values(post: Call) -> dict[str, str]:
    """action_id -> value of the buttons on a posted message."""
    return {
        element["action_id"]: element.get("value", "")
        for block in post.args["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
    }


async def approval_state(runtime: Any, approval_id: str) -> ApprovalState:
    approval = await runtime.approvals.get(approval_id=approval_id)
    assert approval is not None
    return ApprovalState(approval.state)


async def wait_until(predicate: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_event_to_buttons_to_click_to_updated_message(
    app_factory: AppFactory, database_url: str, slack: FakeSlack
) -> None:
    client, runtime = await app_factory(e2e_config(database_url, slack))
    resp = await client.post("/api/v1/events", json=EVENT, headers=auth())
    assert resp.status == 202, await resp.text()

    # The dispatcher posts the approval with its buttons to #ops.
    [post] = await slack.wait_for("chat.postMessage")
    assert post.args["channel"] == "#ops" and "Deploy payments" in post.args["text"]
    values = button_values(post)
    assert set(values) >= {"ackbot.acknowledge", "ackbot.deny"}
    token = values["ackbot.acknowledge"]
    [approval] = (await runtime.approvals.list_approvals(tenants=None))[0]
    ts = "1700000000.000001"

    # Someone who is not an approver clicks: a private refusal, nothing changes.
    await click(client, slack, token, user=BOB, response="bob", ts=ts)
    [refusal] = await slack.wait_for("response_url")
    assert refusal.args["response_type"] == "ephemeral" and refusal.args["replace_original"] is False
    assert "approver" in reply_text(refusal).lower()
    assert await approval_state(runtime, approval.id) is ApprovalState.pending

    # The approver clicks: the decision is recorded and the clicked message shows it at once ...
    await click(client, slack, token, user=ALICE, response="alice", ts=ts)
    [_, replaced] = await slack.wait_for("response_url", 2)
    assert replaced.args["replace_original"] is True
    assert not [b for b in replaced.args["blocks"] if b["type"] == "actions"]
    assert await approval_state(runtime, approval.id) is ApprovalState.acknowledged
    decided = await runtime.approvals.get(approval_id=approval.id)
    assert decided.decided_by == "alice"

    shown = slack.messages[("C0OPS", ts)]
    assert "Alice" in shown["text"] or "alice" in shown["text"]
    assert not [b for b in shown["blocks"] if b["type"] == "actions"]
    # The colour bar is the decided view's, not the pending one's.
    assert "Acknowledged" in str(shown["attachments"]) and "rule deploys" not in str(shown["attachments"])

    # ... and the decision queued an edit of the posted message held for the click's answer, which settled it once
    # Slack took that answer, without a chat.update: the answer put there exactly what the outbox's edit would.
    await wait_until(lambda: settled(runtime, approval.id))
    assert slack.calls_to("chat.update") == []
    [held] = await deliveries(runtime, approval.id, DeliveryPurpose.update)
    assert held.message_ref == {"channel": "C0OPS", "ts": ts} and held.attempts == 1
    assert runtime.dispatcher is not None
    note = await runtime.dispatcher.build_notification(held)
    edit = {"attachments": [], **runtime.channels["ops"].build_message(note)}
    assert {k: v for k, v in replaced.args.items() if k != "replace_original"} == edit

    # The same click again is refused: a token is spent once.
    await click(client, slack, token, user=ALICE, response="replay", ts=ts)
    [*_, replay] = await slack.wait_for("response_url", 3)
    assert replay.args["response_type"] == "ephemeral" and replay.args["replace_original"] is False
    assert await approval_state(runtime, approval.id) is ApprovalState.acknowledged
    assert slack.messages[("C0OPS", ts)] == shown and slack.calls_to("chat.update") == []


async def deliveries(runtime: Any, approval_id: str, purpose: DeliveryPurpose) -> list[DeliveryRow]:
    async with runtime.db.read() as session:
        query = select(DeliveryRow).where(DeliveryRow.approval_id == approval_id, DeliveryRow.purpose == purpose)
        return list((await session.execute(query)).scalars().all())


async def settled(runtime: Any, approval_id: str, purpose: DeliveryPurpose = DeliveryPurpose.update) -> bool:
    """Whether the approval's deliveries of this purpose (its updates: its messages' edits) have all been sent."""
    rows = await deliveries(runtime, approval_id, purpose)
    return bool(rows) and all(row.status == DeliveryStatus.sent for row in rows)


@pytest.mark.parametrize("refusal", ["expired_url", "used_url"])
async def test_the_outbox_edits_the_clicked_message_when_its_response_url_fails(
    app_factory: AppFactory, database_url: str, slack: FakeSlack, refusal: str
) -> None:
    client, runtime = await app_factory(e2e_config(database_url, slack))
    assert (await client.post("/api/v1/events", json=EVENT, headers=auth())).status == 202
    [post] = await slack.wait_for("chat.postMessage")
    [approval] = (await runtime.approvals.list_approvals(tenants=None))[0]
    ts = "1700000000.000001"
    # Slack refuses the response_url (a 404 once it expired; ok:false with a 200 for one used too often).
    slack.fail("response_url", refusal, status=404 if refusal == "expired_url" else 200)
    await click(client, slack, button_values(post)["ackbot.acknowledge"], response="refused", ts=ts)
    [update] = await slack.wait_for("chat.update")
    assert (update.args["channel"], update.args["ts"]) == ("C0OPS", ts)
    assert not [b for b in slack.messages[("C0OPS", ts)]["blocks"] if b["type"] == "actions"]
    await wait_until(lambda: settled(runtime, approval.id))


async def test_a_click_on_another_copy_still_edits_the_posted_message(
    app_factory: AppFactory, database_url: str, slack: FakeSlack
) -> None:
    # The click comes from a message the outbox did not post (a forwarded copy, say): its answer replaces that
    # copy, and the message the outbox posted is edited as before.
    client, _ = await app_factory(e2e_config(database_url, slack))
    assert (await client.post("/api/v1/events", json=EVENT, headers=auth())).status == 202
    [post] = await slack.wait_for("chat.postMessage")
    await click(client, slack, button_values(post)["ackbot.acknowledge"], response="copy", ts="1700000099.000001")
    [update] = await slack.wait_for("chat.update")
    assert (update.args["channel"], update.args["ts"]) == ("C0OPS", "1700000000.000001")


async def test_a_stranger_and_a_forged_click_change_nothing(
    app_factory: AppFactory, database_url: str, slack: FakeSlack
) -> None:
    client, runtime = await app_factory(e2e_config(database_url, slack))
    assert (await client.post("/api/v1/events", json=EVENT, headers=auth())).status == 202
    [post] = await slack.wait_for("chat.postMessage")
    token = button_values(post)["ackbot.deny"]
    [approval] = (await runtime.approvals.list_approvals(tenants=None))[0]
    # A workspace member ackbot does not know; a token with one character changed; a deny token on the ack button.
    await click(client, slack, token, action_id="ackbot.deny", user=MALLORY, response="stranger")
    await click(client, slack, token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1], response="forged")
    await click(client, slack, token, action_id="ackbot.acknowledge", response="swapped")
    replies = await slack.wait_for("response_url", 3)
    assert all(r.args["response_type"] == "ephemeral" for r in replies)
    assert await approval_state(runtime, approval.id) is ApprovalState.pending
    # A badly signed copy of the approver's real click does nothing either.
    body_headers = signed("x", secret="wrong")
    resp = await client.post("/slack/events", data="x", headers=body_headers)
    assert resp.status == 401
    assert await approval_state(runtime, approval.id) is ApprovalState.pending
    assert slack.calls_to("chat.update") == []


async def test_pending_and_ack_by_id_through_the_slash_command(
    app_factory: AppFactory, database_url: str, slack: FakeSlack
) -> None:
    client, runtime = await app_factory(e2e_config(database_url, slack))
    resp = await client.post("/api/v1/events", json=EVENT, headers=auth())
    alert_id = (await resp.json())["alert_id"]
    await slack.wait_for("chat.postMessage")
    [approval] = (await runtime.approvals.list_approvals(tenants=None))[0]
    assert approval.id in reply_text(await command(client, slack, "pending", name="pending-alice"))
    assert approval.id not in reply_text(await command(client, slack, "pending", user=BOB, name="pending-bob"))
    # bob may not; alice may, naming the alert rather than the approval.
    await command(client, slack, f"ack {approval.id}", user=BOB, name="ack-bob")
    assert await approval_state(runtime, approval.id) is ApprovalState.pending
    reply = await command(client, slack, f"ack {alert_id}", name="ack-alice")
    assert "alice" in reply_text(reply).lower()
    assert await approval_state(runtime, approval.id) is ApprovalState.acknowledged
    await slack.wait_for("chat.update")
    text = reply_text(await command(client, slack, "list", name="list"))
    assert "acknowledged" not in text or "No alerts" in text  # an acknowledged alert is no longer open


async def test_an_approval_for_a_person_goes_to_their_dm(
    app_factory: AppFactory, database_url: str, slack: FakeSlack
) -> None:
    client, runtime = await app_factory(e2e_config(database_url, slack))
    request = {
        "tenant": "acme",
        "title": "Rotate the payments database password?",
        "approvers": ["alice"],
        "targets": ["person:alice"],
    }
    resp = await client.post("/api/v1/approvals", json=request, headers=auth())
    assert resp.status in (200, 201, 202), await resp.text()
    [opened] = await slack.wait_for("conversations.open")
    assert opened.args["users"] == ALICE
    [post] = await slack.wait_for("chat.postMessage")
    assert post.args["channel"].startswith("D")
    token = button_values(post)["ackbot.acknowledge"]
    dm = (await slack.wait_for("chat.postMessage"))[0]
    [approval] = (await runtime.approvals.list_approvals(tenants=None))[0]
    # Recorded as sent (with the message's reference) before anyone can click on it, as with a person's click.
    await wait_until(lambda: settled(runtime, approval.id, DeliveryPurpose.notify))
    await click(client, slack, token, channel=post.args["channel"], ts="1700000000.000001", response="dm")
    await wait_until(lambda: settled(runtime, approval.id))
    assert await approval_state(runtime, approval.id) is ApprovalState.acknowledged
    # The click's answer replaced the DM's message, and stood for the outbox's edit of it.
    shown = slack.messages[(dm.args["channel"], "1700000000.000001")]
    assert not [b for b in shown["blocks"] if b["type"] == "actions"]
    assert slack.calls_to("chat.update") == []


@pytest.mark.parametrize("quorum", [2])
async def test_a_vote_toward_a_quorum_keeps_the_buttons(
    app_factory: AppFactory, database_url: str, slack: FakeSlack, quorum: int
) -> None:
    config = e2e_config(database_url, slack, quorum=quorum)
    config.groups[0].members.append("bob")
    client, runtime = await app_factory(config)
    assert (await client.post("/api/v1/events", json=EVENT, headers=auth())).status == 202
    [post] = await slack.wait_for("chat.postMessage")
    token = button_values(post)["ackbot.acknowledge"]
    await click(client, slack, token, response="first-vote")
    [vote] = await slack.wait_for("response_url")
    assert vote.args["response_type"] == "ephemeral" and vote.args["replace_original"] is False
    [approval] = (await runtime.approvals.list_approvals(tenants=None))[0]
    assert await approval_state(runtime, approval.id) is ApprovalState.pending


async def test_escalate_shows_who_escalated_and_the_next_level_is_asked(
    app_factory: AppFactory, database_url: str, slack: FakeSlack
) -> None:
    step = {"after": "10m", "targets": ["person:bob"], "approvers": ["bob"]}
    client, runtime = await app_factory(e2e_config(database_url, slack, escalation=[step]))
    assert (await client.post("/api/v1/events", json=EVENT, headers=auth())).status == 202
    [post] = await slack.wait_for("chat.postMessage")
    token = button_values(post)["ackbot.escalate"]
    await click(client, slack, token, action_id="ackbot.escalate", response="escalate")
    [replaced] = await slack.wait_for("response_url")
    assert replaced.args["replace_original"] is True and "Escalated" in replaced.args["text"]
    [approval] = (await runtime.approvals.list_approvals(tenants=None))[0]
    assert await approval_state(runtime, approval.id) is ApprovalState.escalated
    # The next level is asked in bob's DM, with buttons of its own.
    [opened] = await slack.wait_for("conversations.open")
    assert opened.args["users"] == BOB
    [_, to_bob] = await slack.wait_for("chat.postMessage", 2)
    assert to_bob.args["channel"].startswith("D") and "ackbot.acknowledge" in button_values(to_bob)


async def test_silence_an_alert_from_slack(app_factory: AppFactory, database_url: str, slack: FakeSlack) -> None:
    client, _ = await app_factory(e2e_config(database_url, slack), run_dispatcher=False)
    event = {**EVENT, "kind": "deploy.blocked", "title": "Disk full on db-1", "dedup_key": "disk-db-1"}
    resp = await client.post("/api/v1/events", json=event, headers=auth())
    alert_id = (await resp.json())["alert_id"]
    assert "silenced until" in reply_text(await command(client, slack, f"silence {alert_id} 2h deploying", name="s1"))
    assert "Not allowed" in reply_text(await command(client, slack, f"silence {alert_id} 2h", user=MALLORY, name="s2"))
    assert "duration" in reply_text(await command(client, slack, f"silence {alert_id} soon", name="s3"))
    assert "No alert alr_nope" in reply_text(await command(client, slack, "silence alr_nope 1h", name="s4"))
    assert "Usage" in reply_text(await command(client, slack, "silence", name="s5"))
    # The alert fires again: recorded, but nobody is told.
    resp = await client.post("/api/v1/events", json={**event, "id": "again"}, headers=auth())
    assert (await resp.json())["silenced"] is True
