"""Ack tokens never reach a log, and refused Slack requests cost one short line, however many arrive."""

from __future__ import annotations

import io
import logging
import time
from typing import Any

import pytest

from bot.logs import REDACTED_TOKEN, JsonFormatter, RateLimitedLog, TokenRedactionFilter, redact_tokens
from core.tokens import DsseCodec, HmacCodec, KeyEntry, KeyRing, generate_ed25519_pem, generate_hmac_secret
from tests.conftest import AppFactory, auth
from tests.peers.fake_slack import FakeSlack
from tests.test_slack_app import click_body, signed, slack, slack_config
from tests.test_slack_e2e import button_values

__all__ = ["slack"]  # the fixture, shared with test_slack_app

CLAIMS: dict[str, Any] = {"tenant": "acme", "approval_id": "apr_1", "channel": "ops", "choice": "acknowledge"}


def tokens() -> list[str]:
    """Tokens of each mode, as buttons and links carry them."""
    hmac = HmacCodec(KeyRing([KeyEntry("k1", generate_hmac_secret())]))
    dsse = DsseCodec(KeyRing([KeyEntry("k2", generate_ed25519_pem())]))
    return [codec.issue(**CLAIMS, subject=subject) for codec in (hmac, dsse) for subject in (None, "carol")]


@pytest.mark.parametrize(
    "where",
    [
        "GET /ack/{token} failed",
        "body: payload={token}&x=1",
        "value={token}",
        "payload=%7B%22value%22%3A%22{token}%22%7D",
    ],
)
@pytest.mark.parametrize("as_json", [False, True])
def test_the_filter_removes_tokens_from_every_line(where: str, as_json: bool) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(TokenRedactionFilter())
    if as_json:
        handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ackbot.test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for token in tokens():
            logger.warning("request %s", where.format(token=token))
            try:
                raise ValueError(f"bad token {token}")
            except ValueError:
                logger.exception("failed")
            assert token not in stream.getvalue()
    finally:
        logger.removeHandler(handler)
    assert REDACTED_TOKEN in stream.getvalue()


def test_ordinary_lines_are_kept() -> None:
    for line in [
        "delivery dlv_01HZX3 to https://hooks.example.com answered HTTP 500",
        "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "teams conversation 19:ops-platform@thread.tacv2 user 8f0c1a2b-0000-4000-8000-00000000b0b0",
    ]:
        assert redact_tokens(line) == line


def test_a_flood_is_one_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    limited = RateLimitedLog(logging.getLogger("ackbot.test.flood"), interval=60)
    with caplog.at_level(logging.DEBUG):
        for _ in range(1000):
            limited.warning("refused (%d bytes)", 10)
    assert [r.getMessage() for r in caplog.records] == ["refused (10 bytes)"]
    limited._last -= 61  # the interval has passed
    with caplog.at_level(logging.DEBUG):
        limited.warning("refused (%d bytes)", 10)
    assert caplog.records[-1].getMessage() == "refused (10 bytes) (and 999 more in the last 60s, not logged)"


async def test_refused_slack_bodies_are_one_short_line_without_the_token(
    app_factory: AppFactory, database_url: str, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.handler.addFilter(TokenRedactionFilter())  # as on the server's handler (bot/logs.configure)
    rules = [{"name": "ops", "actions": [{"channel": "ops", "approval": {}}]}]
    client, _runtime = await app_factory(slack_config(database_url, slack, rules=rules))
    event = {"kind": "deploy.requested", "tenant": "acme", "title": "Deploy", "severity": "high"}
    assert (await client.post("/api/v1/events", json=event, headers=auth())).status == 202
    [post] = await slack.wait_for("chat.postMessage")
    token = button_values(post)["ackbot.acknowledge"]
    caplog.clear()

    # A real token in a click whose signature is wrong, then ten unsigned bodies of a megabyte (just under the limit).
    body = click_body(slack, token)
    resp = await client.post("/slack/events", data=body, headers=signed(body, secret="not-the-signing-secret"))
    assert resp.status == 401
    big = "command=/ackbot&text=" + "x" * (1_000_000 - len("command=/ackbot&text="))
    for _ in range(10):
        resp = await client.post(
            "/slack/events", data=big, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert resp.status == 401
    logged = caplog.text
    assert token not in logged and "xxxxxxxxxx" not in logged
    refused = [r.getMessage() for r in caplog.records if "Slack request refused" in r.getMessage()]
    assert len(refused) == 1 and f"{len(body)} bytes" in refused[0]
    # What the server logs at its default level (the access log is at WARNING there: bot/logs.py).
    shown = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO and r.name != "aiohttp.access"]
    assert sum(map(len, shown)) < 500, shown


def test_redaction_is_linear_in_the_line() -> None:
    # A megabyte of token-like characters, as an unsigned body quoted by a library would be: well under a second.
    started = time.perf_counter()
    redact_tokens("x" * 1_000_000)
    redact_tokens(("a" * 50 + ".") * 20_000)
    assert time.perf_counter() - started < 1.0
