"""Secrets never show: not in logs, API answers, error messages, audit rows or anywhere in the database."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy import select

from core.store.tables import Base
from tests.conftest import API_KEY, AppFactory, auth, make_config
from tests.peers.http_sink import HttpSink, Reply

WEBHOOK_SECRET = "whsec-hygiene-5f0c1d2e3a4b"
SLACK_HOOK_TOKEN = "XyZhygieneHookToken1234567890"
TOKEN_KEY = "hmac-hygiene-key-7a6b5c4d3e2f1a0b"
CALLBACK_SECRET = "callback-hygiene-secret-99aa88bb77cc"


async def test_no_secret_leaks_anywhere(
    app_factory: AppFactory, database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [API_KEY, WEBHOOK_SECRET, SLACK_HOOK_TOKEN, TOKEN_KEY, CALLBACK_SECRET]
    async with HttpSink(Reply(500, "receiver exploded")) as sink:
        monkeypatch.setenv("HYGIENE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        monkeypatch.setenv("HYGIENE_SLACK_HOOK", sink.url(f"/services/T000/B000/{SLACK_HOOK_TOKEN}"))
        monkeypatch.setenv("HYGIENE_TOKEN_KEY", TOKEN_KEY)
        monkeypatch.setenv("HYGIENE_CALLBACK_SECRET", CALLBACK_SECRET)
        channels = [
            {
                "name": "hook",
                "type": "webhook",
                "settings": {"url": sink.url("/hook"), "secret": "env:HYGIENE_WEBHOOK_SECRET", "allow_private": True},
            },
            {
                "name": "slackhook",
                "type": "slack_webhook",
                "settings": {"url": "env:HYGIENE_SLACK_HOOK", "allow_private": True},
            },
        ]
        config = make_config(
            database_url,
            channels=channels,
            rules=[{"name": "r", "actions": [{"channel": "hook"}, {"channel": "slackhook"}]}],
            tokens={"mode": "hmac", "keys": [{"id": "k1", "secret": "env:HYGIENE_TOKEN_KEY"}]},
            approvals={"callback_secret": "env:HYGIENE_CALLBACK_SECRET", "callback_allow_private": True},
            people=[{"name": "alice", "identities": {"slack": "U1"}}],
        )
        client, runtime = await app_factory(config, run_dispatcher=False)
        seen: list[str] = []

        async def call(method: str, path: str, **kw: Any) -> Any:
            resp = await client.request(method, path, headers=auth(), **kw)
            text = await resp.text()
            seen.append(text)
            return resp

        await call("POST", "/api/v1/events", json={"kind": "k", "title": "t", "tenant": "acme"})
        created = await call(
            "POST",
            "/api/v1/approvals",
            json={"tenant": "acme", "title": "may I?", "targets": ["hook"], "approvers": ["alice"],
                  "callback_url": sink.url("/callback")},
        )  # fmt: skip
        approval_id = (await created.json())["id"]
        await runtime.dispatcher.run_once()
        issued = await call(
            "POST",
            "/api/v1/ack-tokens/issue",
            json={"approval_id": approval_id, "choice": "acknowledge", "channel": "hook"},
        )
        token = (await issued.json())["token"]
        await call(
            "POST",
            f"/api/v1/approvals/{approval_id}/decisions",
            json={"actor": {"platform": "slack", "id": "U1"}, "token": token},
        )
        await runtime.dispatcher.run_once()
        for path in [
            "/api/v1/channels",
            "/api/v1/channels/hook",
            "/api/v1/channels/health",
            "/api/v1/deliveries?limit=500",
            "/api/v1/audit",
            f"/api/v1/approvals/{approval_id}",
            "/api/v1/ack-tokens/keys",
            "/api/v1/openapi.json",
            "/metrics",
        ]:
            assert (await call("GET", path)).status == 200, path
        deliveries = (await (await client.get("/api/v1/deliveries?limit=500", headers=auth())).json())["items"]
        assert any(d["status"] in ("failed", "dead") for d in deliveries), (
            "the failing receivers must have produced errors"
        )
        for delivery in deliveries:
            await call("GET", f"/api/v1/deliveries/{delivery['id']}")
        seen.append(caplog.text)

        dump: list[str] = []
        async with runtime.db.read() as session:
            for table in Base.metadata.sorted_tables:
                rows = (await session.execute(select(table))).all()
                dump += [repr(tuple(row)) for row in rows]
        seen.append("\n".join(dump))

    assert any("HTTP 500" in text for text in seen), "errors were recorded and inspected"
    everything = "\n".join(seen)
    leaked = [secret[:6] + "…" for secret in secrets if secret in everything]
    assert leaked == []
    assert token not in "\n".join(dump), "ack tokens are not stored, only their nonces"
