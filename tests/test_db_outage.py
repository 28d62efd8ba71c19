"""A database outage is a 503 with Retry-After, /readyz says why at once, and the log has one line per outage (#18).

PostgreSQL is shared and stays up: the app reaches it through a loopback TCP proxy that the test cuts and mends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.app import build_runtime, create_app
from tests.conftest import auth, make_config

EVENT = {"kind": "deploy.failed", "title": "deploy failed", "severity": "high"}


class CuttableProxy:
    """Forwards a loopback port to the database until cut; mended, it listens on the same port again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()


@pytest.fixture
async def proxy(pg_url: str) -> AsyncIterator[tuple[CuttableProxy, str]]:
    parts = urlsplit(pg_url)
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    netloc = parts.netloc.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
    try:
        yield proxy, parts._replace(netloc=netloc).geturl()
    finally:
        await proxy.cut()


@pytest.fixture
async def outage_client(proxy: tuple[CuttableProxy, str]) -> AsyncIterator[tuple[TestClient[Any, Any], CuttableProxy]]:
    cuttable, url = proxy
    client: TestClient[Any, Any] = TestClient(
        TestServer(create_app(build_runtime(make_config(url), run_dispatcher=False)))
    )
    await client.start_server()
    try:
        yield client, cuttable
    finally:
        await cuttable.start()  # mended, so that shutting down does not wait on a dead database
        await client.close()


async def test_an_outage_is_503_with_retry_after_and_one_log_line(
    outage_client: tuple[TestClient[Any, Any], CuttableProxy], caplog: pytest.LogCaptureFixture
) -> None:
    client, cuttable = outage_client
    assert (await client.post("/api/v1/events", json=EVENT, headers=auth())).status == 202
    await cuttable.cut()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        statuses: list[int] = []
        for _ in range(10):
            resp = await client.post("/api/v1/events", json=EVENT, headers=auth())
            statuses.append(resp.status)
            assert resp.status == 503, await resp.text()
            assert int(resp.headers["Retry-After"]) >= 1
            assert "database" in (await resp.json())["error"]["message"]
            resp = await client.get("/api/v1/alerts", headers=auth())
            assert resp.status == 503, await resp.text()
        started = asyncio.get_running_loop().time()
        resp = await client.get("/readyz")
        assert asyncio.get_running_loop().time() - started < 5
        ready: dict[str, Any] = await resp.json()
        assert resp.status == 503 and ready["database"] == "unreachable" and ready["reason"], ready
        outage_lines = [r for r in caplog.records if "database" in r.getMessage() and r.levelno >= logging.WARNING]
        assert len(outage_lines) == 1, [r.getMessage() for r in outage_lines]
        assert not any(r.exc_info for r in caplog.records if r.levelno >= logging.WARNING)
        await cuttable.start()
        for _ in range(50):
            resp = await client.post("/api/v1/events", json=EVENT, headers=auth())
            if resp.status == 202:
                break
            await asyncio.sleep(0.1)
        assert resp.status == 202, await resp.text()
        assert (await client.get("/readyz")).status == 200
        assert any("database is reachable again" in r.getMessage() for r in caplog.records)
