"""Real `ackbot serve` processes: two replicas on one PostgreSQL share the outbox with no duplicates, and a
replica killed with SIGKILL in the middle of dispatch loses nothing (PostgreSQL and SQLite)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from sqlalchemy import func, select

from core import audit
from core.store.db import Database
from core.store.tables import AuditPendingRow, AuditRow
from tests.conftest import API_KEY, create_pg_database, drop_pg_database, skip_or_fail_without_pg
from tests.peers.http_sink import HttpSink, Reply

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(path: Path, database_url: str, sink_url: str, destinations: int = 4) -> None:
    channels = [
        {
            "name": f"d{i}",
            "type": "webhook",
            "settings": {
                "url": f"{sink_url}/d{i}",
                "secret": "env:ACKBOT_TEST_WEBHOOK_SECRET",
                "allow_private": True,
                "rate_per_second": 1000,
            },
        }
        for i in range(destinations)
    ]
    rules = [
        {"name": f"to-d{i}", "match": {"labels": {"dest": f"d{i}"}}, "actions": [{"channel": f"d{i}"}]}
        for i in range(destinations)
    ]
    config = {
        "people": [{"name": "alice", "identities": {"slack": "UALICE"}}],
        "approvals": {"scheduler_interval": "200ms"},
        "database": {"url": database_url},
        "dispatch": {"workers": 8, "poll_interval": "0.05s", "lease": "10s"},
        "api_keys": [{"name": "admin", "key": "env:ACKBOT_TEST_ADMIN_KEY", "tenant": "*", "scopes": ["notify.admin"]}],
        "channels": channels,
        "rules": rules,
    }
    path.write_text(yaml.safe_dump(config))


class Replica:
    """One `ackbot serve` process on a free loopback port."""

    def __init__(self, config: Path, name: str) -> None:
        self.config = config
        self.name = name
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None
        self.log = config.parent / f"{name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Replica:
        env = {**os.environ, "ACKBOT_LOG_LEVEL": "WARNING"}
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot.cli", "serve", "--config", str(self.config), "--port", str(self.port),
                cwd=ROOT, env=env, stdout=log, stderr=log,
            )  # fmt: skip
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(f"{self.url}/readyz") as resp:
                        if resp.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                if self.process.returncode is not None:
                    break
                await asyncio.sleep(0.1)
        raise AssertionError(f"replica {self.name} did not become ready:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def post_events(url: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/api/v1/events", json=events, headers={"Authorization": f"Bearer {API_KEY}"}) as resp,
    ):
        assert resp.status == 202, await resp.text()
        return list(await resp.json())


def make_events(prefix: str, count: int, destinations: int = 4) -> list[dict[str, Any]]:
    return [
        {
            "kind": "load.test",
            "tenant": "acme",
            "title": f"event {prefix}-{i}",
            "dedup_key": f"{prefix}-{i}",
            "scope": {"labels": {"dest": f"d{i % destinations}"}},
        }
        for i in range(count)
    ]


async def wait_for_keys(sink: HttpSink, expected: int, limit: float) -> Counter[str]:
    async with asyncio.timeout(limit):
        await sink.wait_for(expected)
    await asyncio.sleep(1.0)  # anything sent twice would arrive in this second
    return Counter(r.headers["X-Ackbot-Delivery-Id"] for r in sink.requests)


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    await skip_or_fail_without_pg()
    url = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(url)


@pytest.mark.postgres
async def test_two_replicas_deliver_every_event_exactly_once(pg_url: str, tmp_path: Path) -> None:
    async with HttpSink(Reply(200)) as sink:
        config = tmp_path / "ackbot.yml"
        write_config(config, pg_url, sink.base_url)
        replicas = [await Replica(config, "a").start(), await Replica(config, "b").start()]
        try:
            batches = [make_events(f"b{n}", 100) for n in range(20)]
            # Events arrive through both replicas at once; both dispatch.
            results = await asyncio.gather(
                *(post_events(replicas[n % 2].url, batch) for n, batch in enumerate(batches))
            )
            accepted = [r for batch in results for r in batch]
            assert len(accepted) == 2000 and all(r["deliveries"] == 1 for r in accepted)
            received = await wait_for_keys(sink, 2000, limit=120)
            assert len(received) == 2000
            assert max(received.values()) == 1, [k for k, n in received.items() if n > 1][:5]
        finally:
            for replica in replicas:
                await replica.stop()


async def _kill_in_the_middle(database_url: str, tmp_path: Path) -> None:
    async with HttpSink(Reply(200, delay=0.01)) as sink:
        config = tmp_path / "ackbot.yml"
        write_config(config, database_url, sink.base_url)
        replica = await Replica(config, "first").start()
        try:
            accepted = []
            for n in range(5):
                accepted += await post_events(replica.url, make_events(f"k{n}", 100))
            async with asyncio.timeout(60):
                await sink.wait_for(50)
            replica.kill()
            await replica.process.wait() if replica.process else None
            delivered_before = len(sink.requests)
            assert delivered_before < 500, "the kill came too late to prove anything"
            replica = await Replica(config, "second").start()
            received = await wait_for_keys(sink, 500, limit=120)
            # Every accepted event arrived; a send cut short by the kill may repeat, under the same key.
            assert len(received) == len(accepted) == 500
        finally:
            await replica.stop()


@pytest.mark.postgres
async def test_sigkill_mid_dispatch_loses_nothing_on_postgres(pg_url: str, tmp_path: Path) -> None:
    await _kill_in_the_middle(pg_url, tmp_path)


async def test_sigkill_mid_dispatch_loses_nothing_on_sqlite(tmp_path: Path) -> None:
    await _kill_in_the_middle(f"sqlite+aiosqlite:///{tmp_path}/ackbot.db", tmp_path)


async def _create_approvals(url: str, count: int) -> list[str]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as session:

        async def create(n: int) -> str:
            body = {"tenant": "acme", "title": f"may I {n}?", "targets": [f"d{n % 4}"], "approvers": ["alice"]}
            async with session.post(f"{url}/api/v1/approvals", json=body) as resp:
                assert resp.status == 201, await resp.text()
                return str((await resp.json())["id"])

        return list(await asyncio.gather(*(create(n) for n in range(count))))


@pytest.mark.postgres
async def test_concurrent_clicks_through_two_replicas_decide_once(pg_url: str, tmp_path: Path) -> None:
    async with HttpSink(Reply(200)) as sink:
        config = tmp_path / "ackbot.yml"
        write_config(config, pg_url, sink.base_url)
        replicas = [await Replica(config, "a").start(), await Replica(config, "b").start()]
        try:
            ids = await _create_approvals(replicas[0].url, 200)
            received = await wait_for_keys(sink, 200, limit=120)
            assert len(received) == 200
            tokens: dict[str, str] = {}
            for request in sink.requests:
                body = request.json()
                (button,) = [b for b in body["buttons"] if b["choice"] == "acknowledge"]
                tokens[body["approval"]["id"]] = button["token"]
            assert set(tokens) == set(ids)

            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as session:

                async def click(replica: Replica, approval_id: str) -> int:
                    body = {"actor": {"platform": "slack", "id": "UALICE"}, "token": tokens[approval_id]}
                    async with session.post(f"{replica.url}/api/v1/approvals/{approval_id}/decisions", json=body) as r:
                        return r.status

                # The same button clicked twice on each replica at once, for all 200 approvals.
                outcomes = await asyncio.gather(
                    *(click(replicas[n % 2], approval_id) for approval_id in ids for n in range(4))
                )
                per_approval = [outcomes[i * 4 : i * 4 + 4] for i in range(len(ids))]
                assert all(statuses.count(200) == 1 for statuses in per_approval), per_approval[:3]
                assert all(all(s in (200, 409, 410) for s in statuses) for statuses in per_approval), per_approval[:3]

                async def state(approval_id: str) -> tuple[str, str | None]:
                    async with session.get(f"{replicas[1].url}/api/v1/approvals/{approval_id}") as resp:
                        body = await resp.json()
                        approval = body.get("approval", body)
                        return approval["state"], approval.get("decided_by")

                states = await asyncio.gather(*(state(i) for i in ids))
                assert {s for s, _ in states} == {"acknowledged"}
                assert {by for _, by in states} == {"alice"}

            # Both processes appended to one audit chain at once (each row chained as its transaction committed):
            # a creation, its message's tokens and a decision per approval, and a refusal for every other click,
            # with no fork or gap.
            db = Database(pg_url)
            try:
                report = await audit.verify_chain(db=db)
                assert report.ok and report.rows == 200 * 6, report
                async with db.read() as session:
                    rows = (await session.execute(select(AuditRow.type, func.count()).group_by(AuditRow.type))).all()
                    pending = (await session.execute(select(func.count()).select_from(AuditPendingRow))).scalar_one()
                assert dict(rows) == {
                    "approval.created": 200,
                    "tokens.issued": 200,
                    "approval.acknowledged": 200,
                    "decision.refused": 600,
                }
                assert pending == 0
            finally:
                await db.close()
        finally:
            for replica in replicas:
                await replica.stop()
