"""File descriptors: the soft limit is raised, client connections are capped, idle ones cannot starve /healthz."""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bot.app import build_runtime, create_app
from bot.serving import ConnectionLimiter, connection_cap, raise_open_files_limit
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parent.parent


def test_the_soft_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    try:
        raised = raise_open_files_limit()
        assert raised == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert raised == hard or raised >= 65536
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert connection_cap(1024) < 1024 - 100 and connection_cap(65536) < 65536


def test_the_deployments_set_limit_nofile() -> None:
    assert re.search(r"^LimitNOFILE=\d+", (ROOT / "deploy/ackbot.service").read_text(), re.MULTILINE)
    assert "LimitNOFILE" in (ROOT / "deploy/kubernetes.yaml").read_text()


async def test_idle_connections_cannot_starve_healthz(sqlite_url: str) -> None:
    cap = 40
    app = create_app(build_runtime(make_config(sqlite_url), run_dispatcher=False))
    runner = web.AppRunner(app, access_log=None)
    busy: set[object] = set()
    ConnectionLimiter.track_into(app, busy)
    await runner.setup()
    assert runner.server is not None
    limiter = ConnectionLimiter(runner.server, cap, busy)
    listener = await asyncio.get_running_loop().create_server(limiter, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    idle: list[Any] = []
    try:
        # Five times the cap of sockets that connect and say nothing, and keep-alive ones that asked once.
        for _ in range(cap * 5):
            idle.append(await asyncio.open_connection("127.0.0.1", port))
        async with aiohttp.ClientSession() as session:
            for _ in range(10):
                started = time.monotonic()
                async with session.get(f"http://127.0.0.1:{port}/healthz", timeout=aiohttp.ClientTimeout(5)) as resp:
                    assert resp.status == 200
                assert time.monotonic() - started < 1.0
            await asyncio.sleep(0.05)
            assert len(runner.server.connections) <= cap
            assert limiter.evicted >= cap * 4
    finally:
        for _, writer in idle:
            writer.close()
        listener.close()
        await runner.cleanup()


async def test_a_flood_of_idle_sockets_does_not_starve_a_small_process(tmp_path: Path) -> None:
    # `ackbot serve` under a hard limit of 256 descriptors, then 600 sockets that connect and say nothing.
    port = _free_port()
    config = tmp_path / "ackbot.yml"
    config.write_text(
        f"database:\n  url: sqlite+aiosqlite:///{tmp_path}/ackbot.db\nserver:\n  host: 127.0.0.1\n  port: {port}\n"
        "api_keys:\n  - {name: a, key: env:ACKBOT_TEST_ADMIN_KEY, scopes: [notify.admin]}\n"
    )

    def small_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "serve", "--config", str(config),
        cwd=ROOT, preexec_fn=small_limit, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    sockets: list[Any] = []
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/healthz"
            for _ in range(200):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url) as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.1)
            for _ in range(600):
                with contextlib.suppress(OSError, TimeoutError):
                    sockets.append(await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 0.5))
            latencies = []
            for _ in range(5):
                started = time.monotonic()
                async with session.get(url, timeout=aiohttp.ClientTimeout(5)) as resp:
                    assert resp.status == 200
                latencies.append(time.monotonic() - started)
            assert max(latencies) < 1.0, latencies
    finally:
        for _, writer in sockets:
            writer.close()
        proc.terminate()
        await proc.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
