"""Approvals over real HTTP on SQLite and PostgreSQL: opening, buttons, deciding once, quorum, resume.

Chat channels are stand-ins registered under the real type names ("slack", "email") that record what they are
asked to send and edit, so the tests see exactly which messages an approval causes and which ones it updates.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

import pytest
from aiohttp.test_utils import TestClient, TestServer
from itsdangerous.encoding import base64_decode, base64_encode
from sqlalchemy import event, func, select

from bot.app import build_runtime, create_app
from core import audit
from core.approvals import DecisionReason
from core.approvals.effects import ANSWER_HOLD
from core.channels.base import BaseChannel, Notification, SendResult
from core.clock import ManualClock
from core.models.approvals import ApprovalState
from core.models.deliveries import DeliveryPurpose
from core.models.people import Actor
from core.runtime import Runtime
from core.store.tables import ApprovalVoteRow, AuditRow, DeliveryAttemptRow, DeliveryRow, SpentNonceRow
from core.tokens import TokenClaims
from tests.conftest import API_KEY, READ_KEY, TENANT_KEY, auth, make_config
from tests.statements import recorded_statements

PEOPLE = [
    {
        "name": "alice",
        "display_name": "Alice Example",
        "identities": {"slack": "U0ALICE", "email": "alice@example.com"},
    },
    {"name": "bob", "identities": {"slack": "U0BOB", "teams": "8f0c1a2b-0000-4000-8000-00000000b0b0"}},
    {"name": "carol", "identities": {"email": "carol@example.com"}},
    {"name": "dave", "identities": {"slack": "U0DAVE"}},
    {"name": "erin", "identities": {"slack": "U0ERIN"}},
]
GROUPS = [
    {"name": "oncall", "members": ["alice", "bob"]},
    {"name": "leads", "members": ["carol", "managers"]},
    {"name": "managers", "members": ["erin"]},
]
CHANNELS = [
    {"name": "console", "type": "console"},
    {"name": "chat", "type": "slack"},
    {"name": "mail", "type": "email"},
]

ALICE = Actor(platform="slack", id="U0ALICE")
BOB = Actor(platform="slack", id="U0BOB")
DAVE = Actor(platform="slack", id="U0DAVE")
ERIN = Actor(platform="slack", id="U0ERIN")
CAROL_WEB = Actor(platform="web", id="carol")


@dataclass
class Recorder:
    """What the stand-in channels were asked to do."""

    sent: list[Notification] = field(default_factory=list)
    updated: list[tuple[dict[str, Any], Notification]] = field(default_factory=list)


def recording_channel(type_name: str, recorder: Recorder) -> type[BaseChannel]:
    """A channel class of the given type that records sends and updates and always succeeds."""

    class Recording(BaseChannel):
        type: ClassVar[str] = type_name
        supports_update: ClassVar[bool] = True
        RATE_PER_SECOND: ClassVar[float] = 1000.0

        async def send(self, note: Notification) -> SendResult:
            recorder.sent.append(note)
            return SendResult(message_ref={"message": note.delivery_id, "to": note.target})

        async def update(self, message_ref: Mapping[str, Any], note: Notification) -> SendResult:
            recorder.updated.append((dict(message_ref), note))
            return SendResult(message_ref=dict(message_ref))

    return Recording


@dataclass
class Harness:
    client: TestClient[Any, Any]
    runtime: Runtime
    clock: ManualClock
    recorder: Recorder

    async def create(self, key: str = API_KEY, **fields: Any) -> dict[str, Any]:
        """POST /api/v1/approvals; asserts 201."""
        body = {"tenant": "acme", "title": "Deploy api 1.4 to prod?", "approvers": ["oncall"], "targets": ["chat"]}
        body.update(fields)
        resp = await self.client.post("/api/v1/approvals", json=body, headers=auth(key))
        assert resp.status == 201, await resp.text()
        document: dict[str, Any] = await resp.json()
        return document

    async def dispatch(self) -> int:
        """Send everything that is due (in this task), repeatedly, until nothing is left."""
        assert self.runtime.dispatcher is not None
        total = 0
        while count := await self.runtime.dispatcher.run_once():
            total += count
        return total

    def buttons(self, approval_id: str, *, target: str | None = None) -> dict[str, str]:
        """choice -> token of the latest message sent for the approval (to target, if given)."""
        for note in reversed(self.recorder.sent):
            if note.approval and note.approval.id == approval_id and (target is None or note.target == target):
                return {b.choice: b.token for b in note.buttons}
        raise AssertionError(f"no message for {approval_id} to {target}")

    async def count(self, table: Any, *where: Any) -> int:
        async with self.runtime.db.read() as session:
            query = select(func.count()).select_from(table)
            for condition in where:
                query = query.where(condition)
            return int((await session.execute(query)).scalar_one())

    async def delivery(self, delivery_id: str) -> DeliveryRow:
        async with self.runtime.db.read() as session:
            row = await session.get(DeliveryRow, delivery_id)
        assert row is not None
        return row

    async def replica(self, *, run_dispatcher: bool = False, run_scheduler: bool | None = None) -> Runtime:
        """Another ackbot process on the same database (its own connections, service and scheduler); started."""
        runtime = build_runtime(self.runtime.config, clock=self.clock, run_dispatcher=run_dispatcher)
        runtime.run_scheduler = run_scheduler
        for type_name in ("slack", "email"):
            runtime.registry.register(recording_channel(type_name, self.recorder), replace=True)
        await runtime.start(migrate_db=False)
        return runtime

    async def state(self, approval_id: str) -> ApprovalState:
        approval = await self.runtime.approvals.get(approval_id=approval_id)
        assert approval is not None
        return approval.state


HarnessFactory = Callable[..., Any]


@pytest.fixture
async def harness(database_url: str) -> AsyncIterator[HarnessFactory]:
    """Start ackbot with the stand-in channels on a ManualClock; the dispatcher and scheduler run on demand."""
    clients: list[TestClient[Any, Any]] = []

    async def start(*, clock: ManualClock | None = None, run_dispatcher: bool = False, **overrides: Any) -> Harness:
        clock = clock or ManualClock()
        recorder = Recorder()
        settings: dict[str, Any] = {"people": PEOPLE, "groups": GROUPS, "channels": CHANNELS}
        settings.update(overrides)
        runtime = build_runtime(make_config(database_url, **settings), clock=clock, run_dispatcher=run_dispatcher)
        for type_name in ("slack", "email"):
            runtime.registry.register(recording_channel(type_name, recorder), replace=True)
        client: TestClient[Any, Any] = TestClient(TestServer(create_app(runtime)))
        await client.start_server()
        clients.append(client)
        return Harness(client, runtime, clock, recorder)

    yield start
    for client in clients:
        await client.close()


# ---------------------------------------------------------------- opening


async def test_create_queues_one_message_per_target_in_one_transaction(harness: HarnessFactory) -> None:
    h = await harness()
    created = await h.create(targets=["chat", "person:alice", "person:carol", "person:bob/chat"], context={"pr": 7})
    assert created["id"].startswith("apr_") and created["state"] == "pending"
    assert created["choices"] == ["acknowledge", "deny", "escalate"] and created["quorum"] == 1
    assert created["context"] == {"pr": 7} and created["votes"] == []
    async with h.runtime.db.read() as session:
        rows = (await session.execute(select(DeliveryRow).order_by(DeliveryRow.created_at))).scalars().all()
    got = sorted((r.channel, r.target or "", (r.extra or {}).get("person") or "") for r in rows)
    # person:alice reaches her on every platform she is on; on chat her Slack user id, on mail her address.
    assert got == [
        ("chat", "", ""),
        ("chat", "U0ALICE", "alice"),
        ("chat", "U0BOB", "bob"),
        ("mail", "alice@example.com", "alice"),
        ("mail", "carol@example.com", "carol"),
    ]
    assert all(r.purpose == "notify" and r.approval_id == created["id"] for r in rows)
    assert await h.count(AuditRow, AuditRow.type == "approval.created") == 1

    got_back = await (await h.client.get(f"/api/v1/approvals/{created['id']}", headers=auth(TENANT_KEY))).json()
    assert got_back["title"] == "Deploy api 1.4 to prod?" and got_back["next_due_at"] == got_back["expires_at"]


async def test_bad_requests_name_the_field(harness: HarnessFactory) -> None:
    h = await harness()
    base = {"tenant": "acme", "title": "t", "approvers": ["oncall"], "targets": ["chat"]}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"targets": ["chat", "nowhere"]}, "targets[1]"),
        ({"targets": ["person:zoe"]}, "targets[0]"),
        ({"targets": ["person:carol/chat"]}, "targets[0]"),  # carol has no Slack identity
        ({"approvers": ["oncall", "ghost"]}, "approvers[1]"),
        ({"quorum": 3}, "quorum"),
        ({"callback_url": "ftp://x"}, "callback_url"),
        ({"choices": ["acknowledge", "maybe"]}, "choices[1]"),
        ({"timeout": "1m", "escalation": [{"after": "5m", "targets": ["mail"]}]}, "(body)"),
        ({"escalation": [{"after": "5m", "targets": ["nowhere"]}]}, "escalation[0].targets[0]"),
        ({"targets": []}, "targets"),
        ({"timeout": 10**20}, "timeout"),
        ({"escalation": [{"after": 1e300, "targets": ["chat"]}]}, "escalation[0].after"),
        ({"title": "a\x00b"}, "title"),
        ({"context": {"k": "a\x00b"}}, "context"),
        ({"colour": "red"}, "colour"),
    ]
    for change, field_name in cases:
        resp = await h.client.post("/api/v1/approvals", json={**base, **change}, headers=auth())
        assert resp.status == 422, (change, await resp.text())
        fields = [f["field"] for f in (await resp.json())["error"]["fields"]]
        assert field_name in fields, (change, fields)
    assert (await h.client.get("/api/v1/approvals/apr%00x", headers=auth())).status == 404
    # Approvers as people and groups is the same as a list of names.
    ok = await h.create(approvers={"people": ["dave"], "groups": ["oncall"]})
    assert ok["approvers"] == ["dave", "oncall"]
    assert await h.count(DeliveryRow) == 1


async def test_tenants_and_scopes(harness: HarnessFactory) -> None:
    h = await harness()
    resp = await h.client.post(
        "/api/v1/approvals",
        json={"tenant": "globex", "title": "t", "targets": ["chat"], "approvers": ["oncall"]},
        headers=auth(TENANT_KEY),
    )
    assert resp.status == 403
    resp = await h.client.post(
        "/api/v1/approvals", json={"title": "t", "targets": ["chat"], "approvers": ["oncall"]}, headers=auth(READ_KEY)
    )
    assert resp.status == 403
    mine = await h.create(key=TENANT_KEY, tenant=None)
    assert mine["tenant"] == "acme"
    theirs = await h.create(tenant="globex")
    assert (await h.client.get(f"/api/v1/approvals/{theirs['id']}", headers=auth(TENANT_KEY))).status == 404
    assert (await h.client.get("/api/v1/approvals/apr_nope", headers=auth())).status == 404
    listed = await (await h.client.get("/api/v1/approvals?state=pending", headers=auth(READ_KEY))).json()
    assert [a["id"] for a in listed["items"]] == [mine["id"]]
    everything = await (await h.client.get("/api/v1/approvals?limit=1", headers=auth())).json()
    assert len(everything["items"]) == 1 and everything["next_cursor"]
    second = await (
        await h.client.get(f"/api/v1/approvals?limit=1&cursor={everything['next_cursor']}", headers=auth())
    ).json()
    assert {everything["items"][0]["id"], second["items"][0]["id"]} == {mine["id"], theirs["id"]}
    resp = await h.client.get("/api/v1/approvals?state=maybe", headers=auth())
    assert resp.status == 422 and (await resp.json())["error"]["fields"][0]["field"] == "state"
    assert (await h.client.get("/api/v1/approvals?cursor=!!", headers=auth())).status == 400


# ---------------------------------------------------------------- buttons


async def test_messages_carry_fresh_tokens_bound_to_delivery_channel_and_person(harness: HarnessFactory) -> None:
    h = await harness()
    created = await h.create(targets=["chat", "person:carol"])
    assert await h.dispatch() == 2
    by_target = {note.target: note for note in h.recorder.sent}
    codec = h.runtime.approvals.keys.codec
    now = int(h.clock.now().timestamp())
    for target, note in by_target.items():
        assert note.approval is not None and note.approval.id == created["id"]
        # No escalation steps: no Escalate button that could only be refused.
        assert [b.choice for b in note.buttons] == ["acknowledge", "deny"]
        for button in note.buttons:
            assert len(button.token) <= 2000
            assert button.url == f"http://ackbot.test/ack/{button.token}"
            claims = codec.verify(button.token, now=now)
            assert claims.delivery_id == note.delivery_id and claims.channel == note.channel
            assert claims.approval_id == created["id"] and claims.tenant == "acme" and claims.choice == button.choice
            assert claims.subject == ("carol" if target == "carol@example.com" else None)
            assert claims.expires_at <= note.approval.expires_at
    # Every message's tokens are audited, one row per message: by key id and nonce hash, never the token itself.
    async with h.runtime.db.read() as session:
        rows = (await session.execute(select(AuditRow).where(AuditRow.type == "tokens.issued"))).scalars().all()
    assert sorted(row.data["delivery_id"] for row in rows) == sorted(note.delivery_id for note in h.recorder.sent)
    for row in rows:
        note = next(note for note in h.recorder.sent if note.delivery_id == row.data["delivery_id"])
        assert row.approval_id == created["id"] and row.tenant == "acme" and row.actor_platform == "dispatcher"
        assert row.data["subject"] == ("carol" if note.target == "carol@example.com" else None)
        issued = {token["choice"]: token for token in row.data["tokens"]}
        assert sorted(issued) == ["acknowledge", "deny"]
        for button in note.buttons:
            claims = codec.verify(button.token, now=now)
            assert issued[button.choice]["kid"] == claims.kid and issued[button.choice]["nonce_hash"]
            assert button.token not in str(row.data) and claims.nonce not in str(row.data)


async def test_long_polls_share_one_watcher_get_the_decided_view_and_end_at_shutdown(
    harness: HarnessFactory,
) -> None:
    h = await harness()
    created = [await h.create(targets=["chat"], approvers=["alice"]) for _ in range(6)]
    await h.dispatch()
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    async def poll(approval_id: str) -> tuple[float, dict[str, Any]]:
        answer = await h.client.get(f"/api/v1/approvals/{approval_id}?wait=30", headers=auth())
        assert answer.status == 200
        document: dict[str, Any] = await answer.json()
        return asyncio.get_running_loop().time(), document

    loop = asyncio.get_running_loop()
    polls = [asyncio.create_task(poll(c["id"])) for c in created]
    await asyncio.sleep(0.3)  # every poll has read its approval once and waits
    engine = h.runtime.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        await asyncio.sleep(1.6)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # Three ticks of the one watcher (every 0.5 s), not two reads per waiting poll per tick.
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert 1 <= len(reads) <= 4 and all("approvals.id IN" in s for s in reads), reads

    # A click decided here answers its poll with the view the decision committed, the same as a fresh read.
    first = created[0]["id"]
    token = h.buttons(first)["acknowledge"]
    started = loop.time()
    result = await h.runtime.approvals.decide(token=token, actor=ALICE)
    assert result.ok
    answered_at, document = await asyncio.wait_for(polls[0], 5)
    assert answered_at - started < 0.5 and document["state"] == "acknowledged"
    fresh = await (await h.client.get(f"/api/v1/approvals/{first}", headers=auth())).json()
    assert document == fresh and [v["person"] for v in document["votes"]] == ["alice"]

    # A shutdown answers the polls still waiting at once (they would otherwise hold the stop for 30 s).
    started = loop.time()
    await h.client.server.close()
    answers = await asyncio.wait_for(asyncio.gather(*polls[1:]), 10)
    assert all(doc["state"] == "pending" for _, doc in answers) and loop.time() - started < 5


async def test_a_decision_takes_few_statements(harness: HarnessFactory) -> None:
    h = await harness()
    created = await h.create(targets=["chat"], approvers=["alice"])
    await h.dispatch()
    token = h.buttons(created["id"])["acknowledge"]
    async with recorded_statements(h.runtime.db, boundaries=True) as statements:
        result = await h.runtime.approvals.decide(token=token, actor=ALICE)
    assert result.ok and result.approval is not None and result.approval.state is ApprovalState.acknowledged
    if h.runtime.db.is_postgres:
        # Read the approval, the messages that show it and whether the nonce is spent; then one statement that
        # moves it if it is still as read, spends the nonce, records the vote, queues the updates and appends the
        # audit row (chained by the database as the statement commits). No BEGIN or COMMIT: each commits alone.
        assert [s.split()[0] for s in statements] == ["SELECT", "WITH"], "\n".join(statements)
    else:
        # Read the approval, spend the nonce, record the vote, move it, read the messages that show it, queue
        # their update, append the audit row (chained by a trigger), inside BEGIN IMMEDIATE ... COMMIT.
        assert len([s for s in statements if not s.upper().startswith(("BEGIN", "COMMIT"))]) == 7, statements
    report = await audit.verify_chain(db=h.runtime.db)
    assert report.ok, report


async def test_dsse_tokens_fit_a_slack_button(harness: HarnessFactory) -> None:
    h = await harness(tokens={"mode": "dsse"})
    created = await h.create(
        targets=["person:alice"], escalation=[{"after": "5m", "targets": ["mail"], "approvers": ["leads"]}]
    )
    await h.dispatch()
    for note in h.recorder.sent:
        assert [b.choice for b in note.buttons] == ["acknowledge", "deny", "escalate"]
        assert all(len(b.token) <= 2000 and len(b.url) < 2100 for b in note.buttons)
    keys = await (await h.client.get("/api/v1/ack-tokens/keys")).json()
    assert keys["mode"] == "dsse" and len(keys["keys"]) == 1
    result = await h.runtime.approvals.decide(token=h.buttons(created["id"], target="U0ALICE")["deny"], actor=ALICE)
    assert result.ok and result.approval is not None and result.approval.state is ApprovalState.denied


# ---------------------------------------------------------------- deciding


async def test_a_decision_updates_every_message_and_is_audited(harness: HarnessFactory) -> None:
    h = await harness()
    created = await h.create(targets=["chat", "person:alice", "person:carol"])
    await h.dispatch()
    tokens = h.buttons(created["id"], target="U0ALICE")
    result = await h.runtime.approvals.decide(token=tokens["acknowledge"], actor=ALICE)
    assert result.ok and result.reason is DecisionReason.decided and result.http_status == 200
    assert result.person == "alice" and result.message == "Acknowledged by Alice Example."
    approval = result.approval
    assert approval is not None and approval.state is ApprovalState.acknowledged
    assert approval.decided_by == "alice" and approval.decision_channel == "chat" and approval.decided_at

    # One update per message that showed it, on every channel, each editing its own message.
    async with h.runtime.db.read() as session:
        updates = (
            (await session.execute(select(DeliveryRow).where(DeliveryRow.purpose == DeliveryPurpose.update)))
            .scalars()
            .all()
        )
    assert sorted((u.channel, u.target or "") for u in updates) == [
        ("chat", ""),
        ("chat", "U0ALICE"),
        ("mail", "alice@example.com"),
        ("mail", "carol@example.com"),
    ]
    await h.dispatch()
    assert len(h.recorder.updated) == 4
    for ref, note in h.recorder.updated:
        assert ref["to"] == note.target and note.approval is not None
        assert note.approval.state is ApprovalState.acknowledged and note.buttons == []
    # The nonce is spent, the decision and who took it are in the audit log (the token is not).
    assert await h.count(SpentNonceRow) == 1
    async with h.runtime.db.read() as session:
        row = (await session.execute(select(AuditRow).where(AuditRow.type == "approval.acknowledged"))).scalar_one()
    assert row.actor == "alice" and row.actor_platform == "slack" and row.approval_id == created["id"]
    assert row.data["kid"] and row.data["nonce_hash"] and tokens["acknowledge"] not in str(row.data)
    # The message of a decided approval carries no buttons, even when it goes out later.
    assert h.runtime.approvals.buttons(approval=approval, delivery_id="dlv_x", channel="chat") == []


def by_message(ref: Mapping[str, Any]) -> str:
    return str(ref["message"])


@pytest.mark.parametrize("answer", ["shown", "refused", "lost"])
async def test_the_clicked_messages_update_is_held_for_the_clicks_own_answer(
    harness: HarnessFactory, answer: str
) -> None:
    h = await harness()
    created = await h.create(targets=["chat", "person:alice"])
    await h.dispatch()
    # Alice's copy is the clicked one; another goes to the channel and one to her mailbox.
    [clicked] = [note for note in h.recorder.sent if note.target == "U0ALICE"]
    others = [{"message": n.delivery_id, "to": n.target} for n in h.recorder.sent if n.target != "U0ALICE"]
    ref = {"message": clicked.delivery_id, "to": "U0ALICE"}
    token = h.buttons(created["id"], target="U0ALICE")["acknowledge"]
    result = await h.runtime.approvals.decide(token=token, actor=ALICE, answering=ref)
    held = result.held_update
    assert result.ok and held is not None and held.message_ref == ref and held.channel == "chat"
    assert "held" not in result.model_dump_json()
    row = await h.delivery(held.delivery_id)
    assert (row.status, row.purpose, row.claimed_by) == ("sending", "update", h.runtime.worker_id)
    assert row.lease_until == h.clock.now() + ANSWER_HOLD
    # The outbox edits the other message and leaves the clicked one to the click's answer.
    await h.dispatch()
    assert sorted((r for r, _ in h.recorder.updated), key=by_message) == sorted(others, key=by_message)
    if answer == "shown":
        await h.runtime.settle_answer(held, shown=True)
    elif answer == "refused":
        await h.runtime.settle_answer(held, shown=False)  # handed to the outbox at once
    else:
        h.clock.advance(ANSWER_HOLD + timedelta(seconds=1))  # the process died before it could settle it
    await h.dispatch()
    edited = [r for r, _ in h.recorder.updated]
    assert edited.count(ref) == (0 if answer == "shown" else 1)
    row = await h.delivery(held.delivery_id)
    assert (row.status, row.attempts, row.message_ref, row.claimed_by) == ("sent", 1, ref, None)
    assert await h.count(DeliveryAttemptRow, DeliveryAttemptRow.delivery_id == held.delivery_id) == 1
    # Settled once: a late settle of a delivery that went another way changes nothing.
    await h.runtime.settle_answer(held, shown=False)
    assert (await h.delivery(held.delivery_id)).status == "sent" and await h.dispatch() == 0


async def test_only_a_final_decision_of_the_clicked_message_holds_its_update(harness: HarnessFactory) -> None:
    h = await harness()
    escalation = [{"after": "10m", "targets": ["person:dave"], "approvers": ["dave"]}]
    created = await h.create(targets=["chat"], quorum=2, escalation=escalation)
    await h.dispatch()
    [clicked] = h.recorder.sent
    ref = {"message": clicked.delivery_id, "to": None}
    approvals = h.runtime.approvals
    # A vote toward the quorum: the surface tells the clicker privately, and the message gets the new count.
    vote = await approvals.decide(token=h.buttons(created["id"])["acknowledge"], actor=ALICE, answering=ref)
    assert vote.reason is DecisionReason.vote_recorded and vote.held_update is None
    await h.dispatch()
    fresh = {b.choice: b.token for b in h.recorder.updated[-1][1].buttons}
    # An escalation: the message gets the next level's buttons from the outbox.
    escalated = await approvals.decide(token=fresh["escalate"], actor=BOB, answering=ref)
    assert escalated.reason is DecisionReason.escalated and escalated.held_update is None
    await h.dispatch()
    # A final decision clicked on a message that is not one of the approval's (a forwarded copy, say).
    latest = {b.choice: b.token for b in h.recorder.updated[-1][1].buttons}
    denied = await approvals.decide(token=latest["deny"], actor=BOB, answering={"message": "dlv_copy", "to": None})
    assert denied.ok and denied.approval is not None and denied.approval.state is ApprovalState.denied
    assert denied.held_update is None
    await h.dispatch()
    # The clicked message was edited by the outbox each time (the vote, the escalation, the decision).
    edits = [note for r, note in h.recorder.updated if r == ref]
    assert len(edits) == 3 and edits[-1].approval is not None and edits[-1].approval.state is ApprovalState.denied


async def test_one_button_clicked_twice_at_once_counts_once(harness: HarnessFactory) -> None:
    # Both clicks spend the same nonce, each in its own transaction: one waits on the other's lock on the approval
    # (on PostgreSQL the nonce is spent in the statement that takes it), then finds the nonce spent.
    h = await harness()
    created = await h.create(targets=["chat"], quorum=2)
    await h.dispatch()
    token = h.buttons(created["id"])["acknowledge"]
    results = await asyncio.gather(*(h.runtime.approvals.decide(token=token, actor=actor) for actor in (ALICE, BOB)))
    assert sorted(r.reason.value for r in results) == ["replayed", "vote_recorded"], results
    assert await h.count(SpentNonceRow) == 1
    view = await h.runtime.approvals.view(approval_id=created["id"])
    assert view is not None and len(view.votes) == 1 and view.approval.state is ApprovalState.pending


async def test_every_bad_token_is_refused_and_changes_nothing(harness: HarnessFactory) -> None:
    from core.approvals import keys as key_ops
    from core.tokens import build_codec, generate_hmac_secret

    h = await harness(tokens={"ttl": "10m"})
    created = await h.create(targets=["chat"], quorum=2)
    approval_id = created["id"]
    await h.dispatch()
    tokens = h.buttons(approval_id)
    approvals = h.runtime.approvals
    codec = approvals.keys.codec
    now = int(h.clock.now().timestamp())

    def issue(**overrides: Any) -> str:
        claims = {"tenant": "acme", "approval_id": approval_id, "channel": "chat", "choice": "acknowledge"}
        claims.update(overrides)
        return codec.issue(now=now, **claims)

    stranger = build_codec("hmac", [("k1", generate_hmac_secret(), False)])
    good = tokens["acknowledge"]
    # Tampered: the same signature over claims that now say "deny".
    payload, mac = good.rsplit(".", 1)
    compressed = payload.startswith(".")  # itsdangerous zlib-compresses when that is shorter
    raw = base64_decode(payload.lstrip("."))
    claims = json.loads(zlib.decompress(raw) if compressed else raw)
    claims["c"] = "deny"
    body = json.dumps(claims, separators=(",", ":")).encode()
    body = zlib.compress(body) if compressed else body
    tampered = ("." if compressed else "") + base64_encode(body).decode() + "." + mac
    refusals: list[tuple[str, str, Actor, dict[str, Any]]] = [
        (
            "forged",
            stranger.issue(tenant="acme", approval_id=approval_id, channel="chat", choice="acknowledge"),
            ALICE,
            {},
        ),
        ("garbage", "not-a-token", ALICE, {}),
        ("tampered", tampered, ALICE, {}),
        ("wrong_tenant", issue(tenant="globex"), ALICE, {}),
        ("wrong_choice_expected", good, ALICE, {"choice": "deny"}),
        ("wrong_tenant_expected", good, ALICE, {"tenant": "globex"}),
        ("wrong_choice_offered", issue(choice="maybe"), ALICE, {}),
        ("wrong_channel", good, Actor(platform="teams", id="8f0c1a2b-0000-4000-8000-00000000b0b0"), {}),
    ]
    expected = {
        "forged": DecisionReason.unknown_key,
        "garbage": DecisionReason.malformed,
        "tampered": DecisionReason.bad_signature,
        "wrong_tenant": DecisionReason.wrong_tenant,
        "wrong_choice_expected": DecisionReason.wrong_choice,
        "wrong_tenant_expected": DecisionReason.wrong_tenant,
        "wrong_choice_offered": DecisionReason.wrong_choice,
        "wrong_channel": DecisionReason.wrong_channel,  # a Slack button clicked in Teams
    }
    for name, token, actor, extra in refusals:
        result = await approvals.decide(token=token, actor=actor, **extra)
        assert not result.ok and result.reason is expected[name], (name, result)
        assert 400 <= result.http_status < 500 and result.message
    # A signature made with the same secret under another kid is still a stranger's.
    forged_same_kid = build_codec("hmac", [(codec.signing_kid, generate_hmac_secret(), False)])
    result = await approvals.decide(
        token=forged_same_kid.issue(
            tenant="acme", approval_id=approval_id, channel="chat", choice="acknowledge", now=now
        ),
        actor=ALICE,
    )
    assert result.reason is DecisionReason.bad_signature

    # Replayed: the first use counts (quorum 2 keeps the approval open), the second is refused.
    first = await approvals.decide(token=good, actor=ALICE)
    assert first.ok and first.reason is DecisionReason.vote_recorded and first.votes == 1
    again = await approvals.decide(token=good, actor=BOB)
    assert not again.ok and again.reason is DecisionReason.replayed and again.http_status == 409

    # Retired key: rotate, then retire the key that signed the buttons.
    old_kid = codec.signing_kid
    bob_token = issue()
    await key_ops.rotate(db=h.runtime.db, config=h.runtime.config, now=h.clock.now())
    await approvals.keys.refresh()
    assert approvals.keys.codec.signing_kid != old_kid
    await key_ops.retire(db=h.runtime.db, config=h.runtime.config, kid=old_kid, now=h.clock.now())
    await approvals.keys.refresh()
    result = await approvals.decide(token=bob_token, actor=BOB)
    assert result.reason is DecisionReason.retired_key and result.http_status == 410

    # Expired: the 10-minute ttl runs out well before the approval's hour.
    fresh = approvals.buttons(approval=(await approvals.get(approval_id=approval_id)), delivery_id="d", channel="chat")
    h.clock.advance(timedelta(minutes=11))
    result = await approvals.decide(token=fresh[0].token, actor=BOB)
    assert result.reason is DecisionReason.expired and result.http_status == 410

    # Nothing was decided; only the one good vote counted and only its nonce is spent; every refusal is audited.
    assert await h.state(approval_id) is ApprovalState.pending
    assert await h.count(ApprovalVoteRow) == 1 and await h.count(SpentNonceRow) == 1
    assert await h.count(AuditRow, AuditRow.type == "decision.refused") == len(refusals) + 4
    async with h.runtime.db.read() as session:
        reasons = (await session.execute(select(AuditRow.data).where(AuditRow.type == "decision.refused"))).scalars()
        assert {r["reason"] for r in reasons} >= {"bad_signature", "replayed", "retired_key", "expired", "wrong_tenant"}


async def test_who_may_decide(harness: HarnessFactory) -> None:
    h = await harness()
    approvals = h.runtime.approvals
    created = await h.create(approvers=["oncall", "leads"], requester="alice", targets=["chat"])
    approval_id = created["id"]
    await h.dispatch()
    tokens = h.buttons(approval_id)
    cases = [
        (DAVE, DecisionReason.not_approver, "dave is not an approver of this request."),
        (Actor(platform="slack", id="U0NOBODY"), DecisionReason.unknown_actor, None),
        (ALICE, DecisionReason.self_approval, None),
        (Actor(platform="web", id="alice"), DecisionReason.no_subject, None),
    ]
    for actor, reason, message in cases:
        result = await approvals.decide(token=tokens["acknowledge"], actor=actor)
        assert not result.ok and result.reason is reason and result.http_status == 403, (actor, result)
        if message:
            assert result.message == message
    assert await h.state(approval_id) is ApprovalState.pending
    # The requester may still deny; erin is in managers, inside leads: nested groups count.
    pending = await approvals.list_pending_for(actor=ERIN)
    assert [a.id for a in pending] == [approval_id]
    assert await approvals.list_pending_for(actor=DAVE) == []
    result = await approvals.decide(token=tokens["acknowledge"], actor=ERIN)
    assert result.ok and result.approval is not None and result.approval.decided_by == "erin"

    allowed = await h.create(requester="alice", allow_self_approval=True)
    result = await approvals.decide_by_id(approval_id=allowed["id"], choice="acknowledge", actor=ALICE)
    assert result.ok and result.reason is DecisionReason.decided


async def test_quorum_needs_distinct_people(harness: HarnessFactory) -> None:
    h = await harness()
    approvals = h.runtime.approvals
    created = await h.create(approvers=["oncall", "carol"], quorum=2, targets=["chat"])
    approval_id = created["id"]
    await h.dispatch()
    first = await approvals.decide(token=h.buttons(approval_id)["acknowledge"], actor=ALICE)
    assert first.reason is DecisionReason.vote_recorded and first.votes == 1 and first.quorum == 2
    assert await h.state(approval_id) is ApprovalState.pending
    # The messages were refreshed with the count and new buttons (the clicked one is spent).
    await h.dispatch()
    assert len(h.recorder.updated) == 1
    fresh = {b.choice: b.token for b in h.recorder.updated[0][1].buttons}
    again = await approvals.decide(token=fresh["acknowledge"], actor=ALICE)
    assert again.reason is DecisionReason.already_voted and again.http_status == 409
    second = await approvals.decide(token=fresh["acknowledge"], actor=BOB)
    assert second.ok and second.reason is DecisionReason.decided and second.votes == 2
    view = await (await h.client.get(f"/api/v1/approvals/{approval_id}", headers=auth())).json()
    assert view["state"] == "acknowledged" and [v["person"] for v in view["votes"]] == ["alice", "bob"]

    # One deny ends it, whatever the votes so far.
    other = await h.create(approvers=["oncall", "carol"], quorum=3, targets=["chat"])
    assert (await approvals.decide_by_id(approval_id=other["id"], choice="acknowledge", actor=ALICE)).votes == 1
    denied = await approvals.decide_by_id(approval_id=other["id"], choice="deny", actor=BOB)
    assert denied.ok and denied.approval is not None and denied.approval.state is ApprovalState.denied
    late = await approvals.decide_by_id(
        approval_id=other["id"], choice="acknowledge", actor=Actor(platform="api", id="carol")
    )
    assert late.reason is DecisionReason.already_decided and "denied by bob at" in late.message


async def _decision_writes(h: Harness, approval_id: str) -> dict[str, Any]:
    """What deciding an approval wrote, with its ids, times and token details taken out: what two paths compare."""
    async with h.runtime.db.read() as session:
        deliveries = (
            await session.execute(
                select(DeliveryRow).where(
                    DeliveryRow.approval_id == approval_id, DeliveryRow.purpose != DeliveryPurpose.notify
                )
            )
        ).scalars()
        audits = (await session.execute(select(AuditRow).where(AuditRow.approval_id == approval_id))).scalars()
        votes = (
            await session.execute(select(ApprovalVoteRow).where(ApprovalVoteRow.approval_id == approval_id))
        ).scalars()
        nonces = await session.execute(select(func.count()).where(SpentNonceRow.approval_id == approval_id))
        view = await h.runtime.approvals.view(approval_id=approval_id)
        assert view is not None
        unlike = {"delivery_id", "nonce_hash", "kid"}
        return {
            "deliveries": sorted(
                (
                    d.channel,
                    d.target or "",
                    d.purpose,
                    d.status,
                    # Both made by the same builders; the key hashes the approval's id, the reference names a message.
                    len(d.idempotency_key),
                    json.dumps(
                        {**(d.extra or {}), "message_ref": "message_ref" in (d.extra or {})}, sort_keys=True
                    ).replace(approval_id, "ID"),
                    d.next_attempt_at == d.created_at,
                )
                for d in deliveries
            ),
            "audit": [
                (a.type, a.actor, a.actor_platform, {k: v for k, v in a.data.items() if k not in unlike})
                for a in audits
            ],
            "votes": [(v.person, v.choice, v.actor_platform, v.actor_id, v.channel) for v in votes],
            "nonces": nonces.scalar_one(),
            "approval": view.approval.model_dump(
                exclude={"id", "created_at", "expires_at", "decided_at", "updated_at"}
            ),
            "view_votes": [vote.model_dump(exclude={"at"}) for vote in view.votes],
        }


async def _posted_on_postgres(harness: HarnessFactory) -> tuple[Harness, dict[str, Any], dict[str, str], TokenClaims]:
    """On PostgreSQL only: an approval posted to the chat channel, its buttons' tokens and the claims of its
    Acknowledge button."""
    h = await harness()
    if not h.runtime.db.is_postgres:
        pytest.skip("the one-statement decision is PostgreSQL's")
    created = await h.create(targets=["chat"])
    await h.dispatch()
    tokens = h.buttons(created["id"])
    claims = h.runtime.approvals.keys.authenticated_claims(tokens["acknowledge"])
    assert claims is not None
    return h, created, tokens, claims


async def test_a_plan_lost_to_a_race_is_planned_again_on_what_won(harness: HarnessFactory) -> None:
    # The store writes a plan only on the version it was made on. An acknowledgement planned on the pending
    # approval loses to a deny that lands before its write: it writes nothing, is planned again on the denied
    # approval, and the click is told what became of it.
    h, created, tokens, claims = await _posted_on_postgres(harness)
    from core.approvals import machine, plans
    from core.store import approvals as approval_store

    approvals = h.runtime.approvals
    now = h.clock.now()
    intent = plans.Intent(kind=plans.IntentKind.click, actor=ALICE, choice="acknowledge", claims=claims)
    async with h.runtime.db.read() as session:
        pending = await approval_store.snapshot(session=session, approval_id=created["id"], nonce=claims.nonce)
    stale = machine.decide(pending, intent, now=now, policy=approvals.policy)
    assert pending is not None and stale.result.ok and stale.version == pending.version
    assert (await approvals.decide(token=tokens["deny"], actor=BOB)).ok
    before = await _decision_writes(h, created["id"])
    planned_on: list[ApprovalState | None] = []

    def plan(snapshot: plans.Snapshot | None) -> plans.Plan:
        if not planned_on:
            planned_on.append(None)
            return stale  # as if made before the deny committed
        planned_on.append(snapshot.approval.state if snapshot else None)
        return machine.decide(snapshot, intent, now=now, policy=approvals.policy)

    applied = await approval_store.decide(
        db=h.runtime.db, approval_id=created["id"], nonce=claims.nonce, now=now, plan=plan
    )
    assert applied is not None and applied.plan.refused, applied
    assert applied.plan.result.reason is DecisionReason.already_decided
    assert "denied by bob" in applied.plan.result.message.lower()
    assert planned_on == [None, ApprovalState.denied]
    after = await _decision_writes(h, created["id"])
    assert {key: after[key] for key in ("votes", "deliveries", "nonces")} == {
        key: before[key] for key in ("votes", "deliveries", "nonces")
    }


async def test_a_nonce_spent_by_an_open_transaction_is_not_spent_twice(harness: HarnessFactory) -> None:
    # The read finds the nonce unspent; another transaction has spent it but not committed. The one statement
    # waits for it and then fails whole on the nonce's key, and the locked path refuses the click as a replay.
    h, created, tokens, claims = await _posted_on_postgres(harness)
    import asyncpg

    approvals = h.runtime.approvals
    token = tokens["acknowledge"]
    url = h.runtime.config.database.url.replace("postgresql+asyncpg", "postgresql")
    conn = await asyncpg.connect(url)
    try:
        spending = conn.transaction()
        await spending.start()
        await conn.execute(
            "INSERT INTO spent_nonces (nonce, approval_id, spent_at, expires_at) VALUES ($1, $2, now(), now())",
            claims.nonce,
            created["id"],
        )
        click = asyncio.create_task(approvals.decide(token=token, actor=ALICE))
        await asyncio.sleep(0.5)
        assert not click.done()  # waiting on the open transaction's key
        await spending.commit()
        result = await asyncio.wait_for(click, 10)
    finally:
        await conn.close()
    assert result.reason is DecisionReason.replayed, result
    assert await h.state(created["id"]) is ApprovalState.pending
    assert await h.count(DeliveryRow, DeliveryRow.purpose == DeliveryPurpose.update) == 0
    assert await h.count(AuditRow, AuditRow.type == "approval.acknowledged") == 0
    assert await h.count(ApprovalVoteRow) == 0


async def test_fifty_concurrent_clicks_give_exactly_one_decision(harness: HarnessFactory) -> None:
    h = await harness()
    created = await h.create(approvers=["oncall", "leads"], targets=["chat"])
    approval_id = created["id"]
    await h.dispatch()
    approvals = h.runtime.approvals
    codec = approvals.keys.codec
    now = int(h.clock.now().timestamp())
    people = [ALICE, BOB, ERIN]
    clicks = []
    for n in range(50):
        choice = "acknowledge" if n % 3 else "deny"
        token = codec.issue(tenant="acme", approval_id=approval_id, channel="chat", choice=choice, now=now)
        clicks.append(approvals.decide(token=token, actor=people[n % 3]))
    results = await asyncio.gather(*clicks)
    decided = [r for r in results if r.ok]
    assert len(decided) == 1, [r.reason for r in results]
    assert {r.reason for r in results if not r.ok} <= {DecisionReason.already_decided, DecisionReason.already_voted}
    winner = decided[0].approval
    assert winner is not None and winner.state in (ApprovalState.acknowledged, ApprovalState.denied)
    final = await approvals.get(approval_id=approval_id)
    assert final is not None and final.decided_by == winner.decided_by and final.state is winner.state
    assert await h.count(AuditRow, AuditRow.type.in_(["approval.acknowledged", "approval.denied"])) == 1
    assert await h.count(SpentNonceRow) == 1
    # The one message was updated once, not once per click.
    assert await h.count(DeliveryRow, DeliveryRow.purpose == DeliveryPurpose.update) == 1


async def test_cancel(harness: HarnessFactory) -> None:
    h = await harness()
    created = await h.create(targets=["chat"])
    await h.dispatch()
    resp = await h.client.post(f"/api/v1/approvals/{created['id']}/cancel", headers=auth(READ_KEY))
    assert resp.status == 403
    resp = await h.client.post(f"/api/v1/approvals/{created['id']}/cancel", headers=auth(TENANT_KEY))
    body = await resp.json()
    assert resp.status == 200 and body["reason"] == "cancelled" and body["approval"]["state"] == "cancelled"
    resp = await h.client.post(f"/api/v1/approvals/{created['id']}/cancel", headers=auth())
    assert resp.status == 409 and "cancelled by acme" in (await resp.json())["message"]
    result = await h.runtime.approvals.decide(token=h.buttons(created["id"])["acknowledge"], actor=ALICE)
    assert result.reason is DecisionReason.already_decided
    await h.dispatch()
    assert [note.approval.state for _, note in h.recorder.updated if note.approval] == [ApprovalState.cancelled]


async def test_decisions_relayed_over_the_api(harness: HarnessFactory) -> None:
    h = await harness()
    created = await h.create(targets=["chat"])
    approval_id = created["id"]
    await h.dispatch()
    tokens = h.buttons(approval_id)
    url = f"/api/v1/approvals/{approval_id}/decisions"
    resp = await h.client.post(url, json={"actor": {"platform": "slack", "id": "U0BOB"}}, headers=auth())
    assert resp.status == 422
    resp = await h.client.post(
        url, json={"actor": {"platform": "slack", "id": "U0BOB"}, "token": tokens["deny"]}, headers=auth(TENANT_KEY)
    )
    assert resp.status == 403  # relaying clicks needs notify.admin
    resp = await h.client.post(
        url, json={"actor": {"platform": "slack", "id": "U0DAVE"}, "token": tokens["deny"]}, headers=auth()
    )
    assert resp.status == 403 and (await resp.json())["reason"] == "not_approver"
    resp = await h.client.post(
        url, json={"actor": {"platform": "slack", "id": "U0BOB"}, "token": tokens["deny"]}, headers=auth()
    )
    body = await resp.json()
    assert resp.status == 200 and body["ok"] and body["approval"]["state"] == "denied"
    resp = await h.client.post(
        url,
        json={"actor": {"platform": "teams", "id": "8F0C1A2B-0000-4000-8000-00000000B0B0"}, "choice": "deny"},
        headers=auth(),
    )
    assert resp.status == 409 and (await resp.json())["reason"] == "already_decided"


async def test_long_poll_wakes_on_a_decision_here_and_on_another_replica(harness: HarnessFactory) -> None:
    h = await harness()
    created = await h.create(targets=["chat"])
    approval_id = created["id"]
    loop = asyncio.get_running_loop()

    started = loop.time()
    resp = await h.client.get(f"/api/v1/approvals/{approval_id}?wait=0.3", headers=auth())
    assert (await resp.json())["state"] == "pending" and 0.25 <= loop.time() - started < 3
    assert (await h.client.get(f"/api/v1/approvals/{approval_id}?wait=61", headers=auth())).status == 422

    async def poll() -> dict[str, Any]:
        answer = await h.client.get(f"/api/v1/approvals/{approval_id}?wait=30", headers=auth())
        document: dict[str, Any] = await answer.json()
        return document

    waiter = asyncio.create_task(poll())
    await asyncio.sleep(0.2)
    started = loop.time()
    await h.runtime.approvals.decide_by_id(approval_id=approval_id, choice="acknowledge", actor=BOB)
    answer = await asyncio.wait_for(waiter, 5)
    assert answer["state"] == "acknowledged" and loop.time() - started < 0.5

    # A decision taken by another replica (its own service and connections) is seen by the short poll.
    other = await h.create(targets=["chat"])
    waiter = asyncio.create_task(h.client.get(f"/api/v1/approvals/{other['id']}?wait=30", headers=auth()))
    await asyncio.sleep(0.2)
    replica = await h.replica()
    try:
        started = loop.time()
        result = await replica.approvals.decide_by_id(approval_id=other["id"], choice="deny", actor=ALICE)
        assert result.ok
        resp = await asyncio.wait_for(waiter, 5)
        assert (await resp.json())["state"] == "denied" and loop.time() - started < 2
    finally:
        await replica.stop()
