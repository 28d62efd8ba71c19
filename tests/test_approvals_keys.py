"""Ack-token keys: generated once and shared through the database, rotated and retired; the token API."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from core.approvals import DecisionReason
from core.approvals import keys as key_ops
from core.store.tables import SigningKeyRow
from tests import test_approvals
from tests.conftest import TENANT_KEY, auth
from tests.test_approvals import ALICE, BOB, HarnessFactory

harness = test_approvals.harness


async def _keys(runtime: Any, purpose: str | None = None) -> list[SigningKeyRow]:
    async with runtime.db.read() as session:
        query = select(SigningKeyRow).order_by(SigningKeyRow.created_at)
        if purpose:
            query = query.where(SigningKeyRow.purpose == purpose)
        return list((await session.execute(query)).scalars())


async def test_a_generated_key_is_stored_once_and_shared_by_replicas(
    harness: HarnessFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await harness()
    assert [k.purpose for k in await _keys(h.runtime)] == ["hmac", "callback", "csrf"]
    created = await h.create(targets=["chat"], quorum=2)
    await h.dispatch()
    token = h.buttons(created["id"])["acknowledge"]

    # Two more processes start at once on the same database: no new key, and each accepts the first one's tokens.
    first, second = await asyncio.gather(h.replica(), h.replica())
    try:
        assert len(await _keys(h.runtime, "hmac")) == 1
        assert first.approvals.keys.callback_secret == h.runtime.approvals.keys.callback_secret
        assert first.approvals.keys.csrf_for("t") == second.approvals.keys.csrf_for("t")
        result = await first.approvals.decide(token=token, actor=ALICE)
        assert result.reason is DecisionReason.vote_recorded

        # A key rotated by another process is picked up when a token names it (no restart needed).
        monkeypatch.setattr(key_ops, "_RELOAD_INTERVAL", 0.0)
        await key_ops.rotate(db=h.runtime.db, config=h.runtime.config, now=h.clock.now())
        await h.runtime.approvals.keys.refresh()
        approval = await h.runtime.approvals.get(approval_id=created["id"])
        assert approval is not None
        (button, *_) = h.runtime.approvals.buttons(approval=approval, delivery_id="d1", channel="chat")
        assert second.approvals.keys.codec.signing_kid != h.runtime.approvals.keys.codec.signing_kid
        result = await second.approvals.decide(token=button.token, actor=BOB)
        assert result.ok and result.reason is DecisionReason.decided
    finally:
        await first.stop()
        await second.stop()


async def test_keys_from_the_config_file_win(harness: HarnessFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACKBOT_TEST_TOKEN_KEY", "config-file-hmac-secret-0123456789")
    h = await harness(tokens={"keys": [{"id": "file-1", "secret": "env:ACKBOT_TEST_TOKEN_KEY"}]})
    assert h.runtime.approvals.keys.codec.signing_kid == "file-1"
    assert await _keys(h.runtime, "hmac") == []
    with pytest.raises(key_ops.KeyOperationError, match="config file"):
        await key_ops.rotate(db=h.runtime.db, config=h.runtime.config, now=h.clock.now())


async def test_public_keys(harness: HarnessFactory) -> None:
    h = await harness()
    resp = await h.client.get("/api/v1/ack-tokens/keys")
    assert resp.status == 200 and await resp.json() == {"mode": "hmac", "keys": []}
    d = await harness(tokens={"mode": "dsse"})
    text = await (await d.client.get("/api/v1/ack-tokens/keys")).text()
    assert "PUBLIC KEY" in text and "PRIVATE" not in text
    (key,) = (await (await d.client.get("/api/v1/ack-tokens/keys")).json())["keys"]
    assert key["alg"] == "ed25519" and key["kid"] == d.runtime.approvals.keys.codec.signing_kid


async def test_issue_and_verify_over_the_api(harness: HarnessFactory) -> None:
    h = await harness()
    created = await h.create(targets=["chat"])
    approval_id = created["id"]
    body = {"approval_id": approval_id, "choice": "acknowledge", "channel": "ci", "subject": "bob", "ttl": "5m"}
    assert (await h.client.post("/api/v1/ack-tokens/issue", json=body, headers=auth(TENANT_KEY))).status == 403
    resp = await h.client.post("/api/v1/ack-tokens/issue", json=body, headers=auth())
    assert resp.status == 201, await resp.text()
    issued = await resp.json()
    token = issued["token"]
    assert issued["url"] == f"http://ackbot.test/ack/{token}"
    claims = issued["claims"]
    assert claims["approval_id"] == approval_id and claims["subject"] == "bob" and claims["channel"] == "ci"
    assert claims["exp"] - claims["iat"] == 300

    for _ in range(2):  # verifying never spends the token
        verdict = await (await h.client.post("/api/v1/ack-tokens/verify", json={"token": token}, headers=auth())).json()
        assert verdict["valid"] is True and verdict["spent"] is False and verdict["reason"] is None
    verdict = await (
        await h.client.post("/api/v1/ack-tokens/verify", json={"token": token, "choice": "deny"}, headers=auth())
    ).json()
    assert verdict == {"valid": False, "reason": "wrong_choice", "spent": False, "claims": None}
    verdict = await (
        await h.client.post("/api/v1/ack-tokens/verify", json={"token": token, "tenant": "globex"}, headers=auth())
    ).json()
    assert verdict["reason"] == "wrong_tenant"

    result = await h.runtime.approvals.decide(token=token, actor=BOB)
    assert result.ok
    verdict = await (await h.client.post("/api/v1/ack-tokens/verify", json={"token": token}, headers=auth())).json()
    assert verdict["valid"] is False and verdict["reason"] == "replayed" and verdict["spent"] is True

    cases: list[tuple[dict[str, Any], int, str]] = [
        ({**body, "approval_id": "apr_nope"}, 404, "approval_id"),
        ({**body, "choice": "maybe"}, 422, "choice"),
        ({**body, "subject": "zoe"}, 422, "subject"),
        (body, 422, "approval_id"),  # decided already
    ]
    other = await h.create(targets=["chat"], choices=["acknowledge"])
    cases.append(({**body, "approval_id": other["id"], "choice": "deny"}, 422, "choice"))
    for request, status, field_name in cases:
        resp = await h.client.post("/api/v1/ack-tokens/issue", json=request, headers=auth())
        assert resp.status == status, (request, await resp.text())
        assert field_name in [f["field"] for f in (await resp.json())["error"].get("fields", [])]
    assert (await h.client.post("/api/v1/ack-tokens/verify", json={}, headers=auth())).status == 422
