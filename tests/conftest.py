"""Shared fixtures: configs on a fresh database (SQLite, and PostgreSQL where reachable) and a live app."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.app import build_runtime, create_app
from core.clock import ManualClock
from core.config import AckbotConfig
from core.runtime import Runtime
from core.store import migrate
from core.store.db import Database

API_KEY = "test-admin-key-0123456789"
TENANT_KEY = "test-tenant-key-0123456789"
READ_KEY = "test-read-key-0123456789"
PG_BASE = os.environ.get("ACKBOT_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432")


_PG_PROBE: list[str | None] = []


async def pg_unavailable() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when they can (probed once per session)."""
    if not _PG_PROBE:
        import asyncpg

        try:
            conn = await asyncpg.connect(PG_BASE.replace("+asyncpg", "") + "/postgres", timeout=3)
            await conn.close()
            _PG_PROBE.append(None)
        except Exception as exc:
            _PG_PROBE.append(f"PostgreSQL not reachable at {PG_BASE} ({type(exc).__name__}: {exc})")
    return _PG_PROBE[0]


async def create_pg_database() -> str:
    """A fresh, empty PostgreSQL database for one test; returns its SQLAlchemy URL."""
    import asyncpg

    name = f"ackbot_test_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(PG_BASE.replace("+asyncpg", "") + "/postgres")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{PG_BASE}/{name}"


async def drop_pg_database(url: str) -> None:
    import asyncpg

    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(PG_BASE.replace("+asyncpg", "") + "/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def skip_or_fail_without_pg() -> None:
    """Skip a PostgreSQL test with the reason, or fail it where CI demands PostgreSQL (ACKBOT_REQUIRE_PG=1)."""
    reason = await pg_unavailable()
    if reason is None:
        return
    if os.environ.get("ACKBOT_REQUIRE_PG") == "1":
        pytest.fail(f"ACKBOT_REQUIRE_PG=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[str]:
    """A fresh database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/ackbot.db"
        return
    await skip_or_fail_without_pg()
    url = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(url)


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database, for tests that only mean something there (several connections writing)."""
    await skip_or_fail_without_pg()
    url = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(url)


@pytest.fixture
async def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/ackbot.db"


@pytest.fixture
async def migrated_db(database_url: str) -> AsyncIterator[Database]:
    """A migrated database on each backend."""
    db = Database(database_url)
    await migrate.upgrade(db)
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture(autouse=True)
def api_keys_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACKBOT_TEST_ADMIN_KEY", API_KEY)
    monkeypatch.setenv("ACKBOT_TEST_TENANT_KEY", TENANT_KEY)
    monkeypatch.setenv("ACKBOT_TEST_READ_KEY", READ_KEY)
    monkeypatch.setenv("ACKBOT_TEST_WEBHOOK_SECRET", "whsec-test-0123456789")
    for name in ("ACKBOT_DATABASE_URL", "ACKBOT_CONFIG", "ACKBOT_PUBLIC_URL", "ACKBOT_HOST", "ACKBOT_PORT"):
        monkeypatch.delenv(name, raising=False)


def make_config(database_url: str, **overrides: Any) -> AckbotConfig:
    """A test config: three keys (all tenants admin, tenant "acme", read-only), a console channel, one rule."""
    data: dict[str, Any] = {
        "server": {"public_url": "http://ackbot.test"},
        "database": {"url": database_url},
        "dispatch": {"workers": 2, "poll_interval": 0.05},
        "api_keys": [
            {"name": "admin", "key": "env:ACKBOT_TEST_ADMIN_KEY", "tenant": "*", "scopes": ["notify.admin"]},
            {
                "name": "acme",
                "key": "env:ACKBOT_TEST_TENANT_KEY",
                "tenant": "acme",
                "scopes": ["events.write", "notify.read"],
            },
            {"name": "reader", "key": "env:ACKBOT_TEST_READ_KEY", "tenant": "acme", "scopes": ["notify.read"]},
        ],
        "channels": [{"name": "console", "type": "console"}],
        "rules": [{"name": "all", "actions": [{"channel": "console"}]}],
        # The one reference the tests' API-made channels name; never the API keys' variables.
        "secrets": {"allow": ["env:ACKBOT_TEST_WEBHOOK_SECRET"]},
    }
    data.update(overrides)
    return AckbotConfig.model_validate(data)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


AppFactory = Callable[..., Any]


@pytest.fixture
async def app_factory(database_url: str) -> AsyncIterator[AppFactory]:
    """Start a real ackbot app on loopback; returns (client, runtime). Stopped at teardown."""
    clients: list[TestClient[Any, Any]] = []

    async def start(
        config: AckbotConfig | None = None, *, run_dispatcher: bool = True, clock: ManualClock | None = None, **kw: Any
    ) -> tuple[TestClient[Any, Any], Runtime]:
        config = config or make_config(database_url, **kw)
        runtime = build_runtime(config, clock=clock, run_dispatcher=run_dispatcher)
        client: TestClient[Any, Any] = TestClient(TestServer(create_app(runtime)))
        await client.start_server()
        clients.append(client)
        return client, runtime

    yield start
    for client in clients:
        await client.close()


def auth(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def anyio_backend() -> Iterator[str]:
    yield "asyncio"
