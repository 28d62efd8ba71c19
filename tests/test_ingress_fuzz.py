"""The Slack and Teams ingress under hostile bodies: unsigned is 401 before parsing, malformed is 400, never 500.

A seeded fuzzer (the same cases every run) mutates real Slack commands and clicks and real Teams activities:
truncated, bytes flipped, non-UTF-8, payload= that is not JSON or not an object, nested 5,000 levels deep,
timestamps that are not numbers. Every answer must be a 4xx or 2xx with a JSON error body for the 4xx.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.app import build_runtime, create_app
from tests.peers.fake_connector import FakeConnector, message
from tests.peers.fake_slack import FakeSlack
from tests.test_slack_app import SIGNING_SECRET, click_body, command_body, signed, slack, slack_config
from tests.test_teams import connector, teams_config

__all__ = ["connector", "slack"]  # the fixtures, imported for the tests below

FUZZ_CASES = 300
DEEP = 5_000


def _hostile_payloads() -> list[str]:
    return [
        "not json",
        '"a JSON string"',
        "[1, 2, 3]",
        "42",
        "null",
        "[" * DEEP + "]" * DEEP,
        '{"a":' * DEEP + "1" + "}" * DEEP,
        '{"type": "block_actions", "n": 1e999999}',
        '{"type": "block_actions", "n": NaN}',
        "{",
    ]


def _mutations(seed_bodies: list[bytes], rng: random.Random) -> Iterator[bytes]:
    for payload in _hostile_payloads():
        yield urlencode({"payload": payload}).encode()
        yield payload.encode()
    yield b"payload=%ff%fe"
    yield b"payload=" + quote('{"a": "\xff"}', encoding="latin-1").encode()
    yield b"\xff\xfe\x00garbage"
    yield b"command=/ackbot&text=\xc3\x28"
    yield b""
    while True:
        body = bytearray(rng.choice(seed_bodies))
        action = rng.randrange(5)
        if action == 0 and body:
            del body[rng.randrange(len(body)) :]
        elif action == 1 and body:
            for _ in range(rng.randint(1, 8)):
                body[rng.randrange(len(body))] = rng.randrange(256)
        elif action == 2:
            body[rng.randrange(len(body) + 1) : 0] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif action == 3:
            body = bytearray(bytes(rng.randrange(256) for _ in range(rng.randint(0, 200))))
        else:
            body[rng.randrange(len(body) + 1) : 0] = rng.choice([b"{", b"[", b"%7B", b"%5B", b"payload=", b"&"]) * 50
        yield bytes(body)


def _headers(body: bytes, rng: random.Random) -> tuple[dict[str, str], bool]:
    """Headers for body: (headers, properly signed)."""
    kind = rng.randrange(6)
    content_type = rng.choice(["application/x-www-form-urlencoded", "application/json", "text/plain"])
    if kind < 3:
        text = body.decode("latin-1")  # the signature is over the bytes: latin-1 maps each byte to one character
        headers = signed(text, secret=SIGNING_SECRET)
        headers["X-Slack-Signature"] = _sign(body, headers["X-Slack-Request-Timestamp"])
        headers["Content-Type"] = content_type
        return headers, True
    timestamp = rng.choice(["", "abc", "1e9", "-1", "99999999999999999999", str(int(time.time())), " 12", "١٢٣"])
    headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": timestamp}
    if kind == 4:
        headers["X-Slack-Signature"] = rng.choice(["v0=00", "garbage", "", "v0=" + "f" * 64])
    return headers, False


def _sign(body: bytes, timestamp: str) -> str:
    import hashlib
    import hmac

    return "v0=" + hmac.new(SIGNING_SECRET.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()


@pytest.fixture
async def slack_client(sqlite_url: str, slack: FakeSlack) -> AsyncIterator[TestClient[Any, Any]]:
    runtime = build_runtime(slack_config(sqlite_url, slack), run_dispatcher=False)
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(runtime)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def _answer(client: TestClient[Any, Any], body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    resp = await client.post("/slack/events", data=body, headers=headers)
    return resp.status, await resp.text()


async def test_slack_refuses_unsigned_requests_before_parsing(slack_client: TestClient[Any, Any]) -> None:
    for payload in _hostile_payloads():
        body = urlencode({"payload": payload}).encode()
        for timestamp in ["", "abc", "1.5", "١٢٣", str(int(time.time()))]:
            headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": timestamp}
            headers["X-Slack-Signature"] = "v0=" + "0" * 64
            status, text = await _answer(slack_client, body, headers)
            assert status == 401, (payload[:40], timestamp, status, text[:300])
            assert "signed by Slack" in json.loads(text)["error"]["message"]


async def test_slack_answers_malformed_signed_requests_with_400(slack_client: TestClient[Any, Any]) -> None:
    cases = [urlencode({"payload": p}).encode() for p in _hostile_payloads()]
    cases += [b"payload=%ff%fe", b'{"type": "url_verification", "challenge": "\xff"}', b"[1]", b'"text"']
    for body in cases:
        headers = signed(body.decode("latin-1"))
        headers["X-Slack-Signature"] = _sign(body, headers["X-Slack-Request-Timestamp"])
        if body.startswith((b"[", b'"')):
            headers["Content-Type"] = "application/json"
        status, text = await _answer(slack_client, body, headers)
        assert status == 400, (body[:60], status, text[:300])
        assert json.loads(text)["error"]["message"]


async def test_slack_ingress_fuzz(slack_client: TestClient[Any, Any], slack: FakeSlack) -> None:
    rng = random.Random(18)
    seeds = [command_body(slack, "help").encode(), click_body(slack, "good-token").encode()]
    statuses: dict[int, int] = {}
    for count, body in enumerate(_mutations(seeds, rng)):
        if count >= FUZZ_CASES:
            break
        headers, is_signed = _headers(body, rng)
        status, text = await _answer(slack_client, body, headers)
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, (body[:80], headers, status, text[:300])
        if not is_signed:
            assert status == 401, (body[:80], headers, status, text[:300])
        if status >= 400:
            assert "error" in json.loads(text)
    assert statuses.get(401) and statuses.get(400), statuses


def _replies_to_loopback(body: bytes, service_url: str) -> bool:
    # A mutated serviceUrl could send the bot's reply off this machine: such cases are left out.
    return b"serviceUrl" not in body or body.count(service_url.encode()) == body.count(b"serviceUrl")


async def test_teams_ingress_fuzz(sqlite_url: str, connector: FakeConnector) -> None:
    runtime = build_runtime(teams_config(sqlite_url), run_dispatcher=False)
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(runtime)))
    await client.start_server()
    rng = random.Random(18)
    seeds = [json.dumps(message(connector.service_url, "help")).encode()]
    try:
        bodies = [p.encode() for p in _hostile_payloads()] + [b'{"type": "message", "text": "\xff"}']
        cases = itertools.chain(bodies, _mutations(seeds, rng))
        safe = (body for body in cases if _replies_to_loopback(body, connector.service_url))
        for count, body in enumerate(itertools.islice(safe, FUZZ_CASES)):
            resp = await client.post("/api/messages", data=body, headers={"Content-Type": "application/json"})
            text = await resp.text()
            assert resp.status < 500, (body[:80], resp.status, text[:300])
            if count < len(bodies):
                assert resp.status == 400, (body[:80], resp.status, text[:300])
            if resp.status >= 400:
                assert "error" in json.loads(text)
    finally:
        await client.close()
