"""Bad JSON never gives a 500: nesting past the limit and non-finite numbers are a 400 naming the field (#18)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from bot.app import build_runtime, create_app
from core.approvals.models import ApprovalRequest
from core.json_input import MAX_DEPTH, NOT_FINITE, JsonRefused, loads
from core.models.events import EventIn
from tests.conftest import AppFactory, auth, make_config

EVENT: dict[str, Any] = {"kind": "deploy.failed", "title": "deploy failed", "severity": "high"}


def nested(depth: int) -> str:
    """A JSON document depth levels deep: arrays, then an object at the bottom."""
    return "[" * (depth - 1) + "{}" + "]" * (depth - 1)


def _json_operations() -> list[tuple[str, str]]:
    # Every API route that takes a body, from the router itself: a new route cannot miss this test.
    app = create_app(build_runtime(make_config("sqlite+aiosqlite:///:memory:")))
    found = []
    for route in app.router.routes():
        resource = route.resource
        if route.method in {"POST", "PUT", "PATCH"} and resource is not None and resource.canonical.startswith("/api/"):
            found.append((route.method, re.sub(r"{\w+}", "x", resource.canonical)))
    return found


JSON_OPERATIONS = _json_operations()


def test_the_json_routes_are_all_found() -> None:
    paths = {path for _, path in JSON_OPERATIONS}
    for path in ("/api/v1/events", "/api/v1/ingest/alertmanager", "/api/v1/ingest/grafana", "/api/v1/approvals"):
        assert path in paths
    assert {"/api/v1/rules", "/api/v1/rules/test", "/api/v1/silences", "/api/v1/channels"} <= paths


def test_the_reader_bounds_depth_and_numbers() -> None:
    assert loads(nested(MAX_DEPTH)) is not None
    for depth in (MAX_DEPTH + 1, 200, 5_000, 100_000):
        with pytest.raises(JsonRefused, match=f"deeper than {MAX_DEPTH}"):
            loads(nested(depth))
    with pytest.raises(JsonRefused, match="deeper"):
        loads(b"[" * 100_000)  # never closed: refused as too deep, not a RecursionError
    for text, field in [
        ('{"n": 1e999999}', "n"),
        ('{"a": [1, {"b": -1e400}]}', "a[1].b"),
        ('{"n": NaN}', "n"),
        ('{"p": {"q": Infinity}}', "p.q"),
        ('{"p": -Infinity}', "p"),
        ("1e999", "(body)"),
    ]:
        with pytest.raises(JsonRefused) as refused:
            loads(text)
        assert refused.value.field == field and refused.value.message == NOT_FINITE
    assert loads('{"n": 1.7976931348623157e308, "s": "NaN Infinity 1e999999"}')["s"].startswith("NaN")
    assert loads(json.dumps({"a": "é"}).encode("utf-16")) == {"a": "é"}


def test_free_form_payloads_keep_the_same_limits() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(MAX_DEPTH + 1):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(ValueError, match="deeper"):
        EventIn.model_validate({**EVENT, "payload": deep})
    with pytest.raises(ValueError, match="not finite"):
        EventIn.model_validate({**EVENT, "payload": {"n": float("inf")}})
    with pytest.raises(ValueError, match="not finite"):
        ApprovalRequest.model_validate({"title": "t", "targets": ["console"], "context": {"n": float("nan")}})
    assert EventIn.model_validate({**EVENT, "payload": {"n": 1.5, "l": [[1]]}}).payload["n"] == 1.5


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 10_000])
async def test_deep_json_is_a_400_on_every_json_route(sqlite_url: str, depth: int) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    client: TestClient[Any, Any] = TestClient(TestServer(create_app(build_runtime(make_config(sqlite_url)))))
    await client.start_server()
    try:
        bodies = [
            nested(depth),
            json.dumps({**EVENT, "payload": {"deep": "PLACEHOLDER"}}).replace('"PLACEHOLDER"', nested(depth - 2)),
        ]
        for method, path in JSON_OPERATIONS:
            for body in bodies:
                resp = await client.request(
                    method, path, data=body, headers={**auth(), "Content-Type": "application/json"}
                )
                text = await resp.text()
                # A route with a path parameter may find nothing there first; never a 500.
                assert resp.status == 400 or (resp.status == 404 and "/x" in path), (method, path, resp.status, text)
                if resp.status == 400:
                    error = json.loads(text)["error"]
                    assert f"deeper than {MAX_DEPTH}" in error["message"], (method, path, text)
                    assert error.get("fields"), (method, path, text)
    finally:
        await client.close()


async def test_non_finite_numbers_are_a_400_naming_the_field(app_factory: AppFactory) -> None:
    client, _ = await app_factory(run_dispatcher=False)
    for body, field in [
        ('{"kind": "k", "title": "t", "payload": {"n": 1e999999}}', "payload.n"),
        ('{"kind": "k", "title": "t", "payload": {"n": NaN}}', "payload.n"),
        ('[{"kind": "k", "title": "t", "payload": {"a": [Infinity]}}]', "[0].payload.a[0]"),
    ]:
        resp = await client.post("/api/v1/events", data=body, headers={**auth(), "Content-Type": "application/json"})
        assert resp.status == 400, (body, resp.status, await resp.text())
        error = (await resp.json())["error"]
        assert error["fields"] == [{"field": field, "message": NOT_FINITE}]
        assert field in error["message"]
    # Nothing was stored (SQLite would have stored null, PostgreSQL answered 500).
    resp = await client.get("/api/v1/alerts", headers=auth())
    assert (await resp.json())["items"] == []
    body = '{"title": "t", "targets": ["console"], "context": {"x": -1e999}}'
    resp = await client.post("/api/v1/approvals", data=body, headers={**auth(), "Content-Type": "application/json"})
    assert resp.status == 400 and (await resp.json())["error"]["fields"][0]["field"] == "context.x"
