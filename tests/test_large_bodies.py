"""Large valid bodies are read whole, up to max_body_bytes, however they arrive; one byte more is a 413 (#18)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from tests.conftest import AppFactory, auth, make_config

LIMIT = 64 * 1024


def _alertmanager(count: int) -> dict[str, Any]:
    alerts = [
        {
            "status": "firing",
            "labels": {"alertname": "HighLatency", "severity": "critical", "instance": f"host-{i}:9100"},
            "annotations": {"summary": f"p99 above 2s on host-{i}", "description": "x" * 40},
            "startsAt": "2026-11-22T03:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph",
            "fingerprint": f"{i:016x}",
        }
        for i in range(count)
    ]
    return {
        "version": "4",
        "status": "firing",
        "receiver": "ackbot",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "groupKey": "g",
        "alerts": alerts,
    }


def _padded(size: int) -> bytes:
    """An event exactly size bytes long."""
    head = json.dumps({"kind": "k", "title": "t", "payload": {"pad": ""}})
    body = head.replace('"pad": ""', '"pad": "' + "x" * (size - len(head)) + '"')
    assert len(body) == size
    return body.encode()


async def _trickled(body: bytes, pieces: int = 16) -> AsyncIterator[bytes]:
    # Chunked transfer encoding, with pauses so the server sees the body arrive in parts.
    step = len(body) // pieces + 1
    for start in range(0, len(body), step):
        yield body[start : start + step]
        await asyncio.sleep(0.01)


async def test_a_body_at_the_limit_is_read_whole_and_one_byte_more_is_413(
    app_factory: AppFactory, database_url: str
) -> None:
    client, _ = await app_factory(make_config(database_url, server={"max_body_bytes": LIMIT}), run_dispatcher=False)
    headers = {**auth(), "Content-Type": "application/json"}
    for size in (LIMIT - 1, LIMIT):
        resp = await client.post("/api/v1/events", data=_padded(size), headers=headers)
        assert resp.status == 202, (size, await resp.text())
        resp = await client.post("/api/v1/events", data=_trickled(_padded(size)), headers=headers)
        assert resp.status == 202, (size, "chunked", await resp.text())
    resp = await client.post("/api/v1/events", data=_padded(LIMIT + 1), headers=headers)
    assert resp.status == 413 and str(LIMIT) in (await resp.json())["error"]["message"]
    resp = await client.post("/api/v1/events", data=_trickled(_padded(LIMIT + 1)), headers=headers)
    assert resp.status == 413, await resp.text()
    assert "error" in await resp.json()


async def test_a_thousand_events_and_1500_alerts_are_accepted(app_factory: AppFactory) -> None:
    client, _ = await app_factory(run_dispatcher=False)
    batch = [
        {"kind": "k", "title": f"event {i}", "dedup_key": f"d{i}", "summary": "s" * 500, "payload": {"i": i}}
        for i in range(1000)
    ]
    body = json.dumps(batch).encode()
    assert 512 * 1024 < len(body) < 1024 * 1024
    resp = await client.post("/api/v1/events", data=_trickled(body), headers=auth())
    assert resp.status == 202, (await resp.text())[:300]
    assert len(await resp.json()) == 1000
    for count in (300, 1500):
        group = json.dumps(_alertmanager(count)).encode()
        assert len(group) < 1024 * 1024
        resp = await client.post("/api/v1/ingest/alertmanager", data=_trickled(group), headers=auth())
        assert resp.status == 202, (count, (await resp.text())[:300])
        assert len((await resp.json())["events"]) == count


async def test_teams_reads_a_large_activity_whole(app_factory: AppFactory, database_url: str) -> None:
    from tests.test_teams import teams_config

    client, _ = await app_factory(teams_config(database_url, server={"max_body_bytes": LIMIT}), run_dispatcher=False)
    # A conversationUpdate naming nobody the bot serves: parsed whole, it is answered without a reply.
    activity = {"type": "typing", "id": "1", "channelId": "msteams", "text": "x" * (LIMIT - 200)}
    body = json.dumps(activity).encode()
    resp = await client.post("/api/messages", data=_trickled(body), headers={"Content-Type": "application/json"})
    assert resp.status < 300, await resp.text()
    big = json.dumps({**activity, "text": "x" * LIMIT}).encode()
    resp = await client.post("/api/messages", data=_trickled(big), headers={"Content-Type": "application/json"})
    assert resp.status == 413
