"""The OpenAPI 3.1 document is generated from the routes and models, and the API keeps to it under fuzzing."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bot.app import build_runtime, create_app
from bot.handlers.openapi import build_document
from tests.conftest import API_KEY, make_config


def _document() -> dict[str, Any]:
    # Routes are known before the app starts: the document needs no database and no server.
    return build_document(create_app(build_runtime(make_config("sqlite+aiosqlite:///:memory:"))))


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_document_covers_the_api() -> None:
    assert DOCUMENT["openapi"] == "3.1.0"
    paths = DOCUMENT["paths"]
    for path, method in [
        ("/api/v1/events", "post"),
        ("/api/v1/ingest/alertmanager", "post"),
        ("/api/v1/ingest/grafana", "post"),
        ("/api/v1/alerts", "get"),
        ("/api/v1/alerts/{alert_id}", "get"),
        ("/api/v1/rules", "post"),
        ("/api/v1/rules/test", "post"),
        ("/api/v1/deliveries/{delivery_id}/retry", "post"),
        ("/api/v1/channels/{name}/test", "post"),
        ("/healthz", "get"),
    ]:
        assert method in paths[path], (path, method)
    events = paths["/api/v1/events"]["post"]
    assert events["security"] == [{"bearer": ["events.write"]}]
    assert {"202", "401", "403", "413", "422"} <= set(events["responses"])
    # Schemas come from the pydantic models, each defined once under components.
    components = DOCUMENT["components"]["schemas"]
    assert "EventIn" in components and "IngestResult" in components and "Alert" in components
    assert components["EventIn"]["properties"]["severity"]["$ref"] == "#/components/schemas/Severity"


async def test_document_is_served(app_factory: Any) -> None:
    client, _ = await app_factory(run_dispatcher=False)
    served = await (await client.get("/api/v1/openapi.json")).json()
    assert served["paths"].keys() == DOCUMENT["paths"].keys()


class LiveServer:
    """The real app on a loopback port, in a thread of its own (schemathesis calls it synchronously)."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> LiveServer:
        threading.Thread(target=self._serve, daemon=True).start()
        if not self.ready.wait(30):
            raise RuntimeError("the server did not start")
        return self

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        config = make_config(f"sqlite+aiosqlite:///{self.database}")
        self._runner = web.AppRunner(create_app(build_runtime(config, run_dispatcher=False)), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    os.environ.setdefault("ACKBOT_TEST_ADMIN_KEY", API_KEY)
    with LiveServer(tmp_path_factory.mktemp("openapi") / "ackbot.db") as server:
        yield server


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# 40 examples an operation take about 100 s here (150 take 230 s and find nothing more today).
MAX_EXAMPLES = int(os.environ.get("ACKBOT_FUZZ_EXAMPLES", "40"))


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=True,
)
def test_api_keeps_to_its_document(case: Any, live_server: LiveServer) -> None:
    case.call_and_validate(
        base_url=f"http://127.0.0.1:{live_server.port}",
        headers={"Authorization": f"Bearer {API_KEY}"},
        checks=CHECKS,
        excluded_checks=[],
        timeout=120,
    )
