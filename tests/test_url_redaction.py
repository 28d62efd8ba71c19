"""Credentials of URLs never reach a log line or an answer (#18): the start-up line printed the database password."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from bot.logs import JsonFormatter, RedactingFormatter
from core.url_redaction import redact_urls
from tests.conftest import AppFactory, auth


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql+asyncpg://postgres:s3cret@db:5432/ackbot", "postgresql+asyncpg://postgres:***@db:5432/ackbot"),
        (
            "see https://token123@hooks.example/x and http://a:b@c/",
            "see https://***@hooks.example/x and http://a:***@c/",
        ),
        ("https://h.example/hook?token=abc&x=1", "https://h.example/hook?token=***&x=1"),
        ("https://h.example/p?sig=zz#frag", "https://h.example/p?sig=***#frag"),
        ("no url here, a = b & c", "no url here, a = b & c"),
        ("sqlite+aiosqlite:///tmp/ackbot.db", "sqlite+aiosqlite:///tmp/ackbot.db"),
        ("mailto:someone@example.com", "mailto:someone@example.com"),
    ],
)
def test_urls_lose_their_credentials(text: str, expected: str) -> None:
    assert redact_urls(text) == expected


def test_log_lines_and_tracebacks_are_redacted() -> None:
    try:
        raise ConnectionError("cannot reach postgresql://app:hunter2@db/ackbot")
    except ConnectionError:
        record = logging.LogRecord(
            "ackbot", logging.ERROR, __file__, 1, "database %s down", ("postgresql://app:hunter2@db/x",), sys.exc_info()
        )
    for formatter in (RedactingFormatter("%(message)s"), JsonFormatter()):
        line = formatter.format(record)
        assert "hunter2" not in line and "app:***@db" in line


def test_the_start_up_line_hides_the_database_password(tmp_path: Path) -> None:
    config = tmp_path / "ackbot.yml"
    # A closed port: the server cannot start, but the line saying what it would start on comes first.
    config.write_text(
        "database:\n  url: postgresql+asyncpg://postgres:hunter2@127.0.0.1:9/ackbot\n"
        "server:\n  port: 0\napi_keys:\n  - {name: a, key: env:ACKBOT_TEST_ADMIN_KEY, scopes: [notify.admin]}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert "postgres:***@127.0.0.1" in output, output[-2000:]
    assert "hunter2" not in output


async def test_error_answers_are_redacted(app_factory: AppFactory) -> None:
    client, _ = await app_factory(run_dispatcher=False)
    channel = {"name": "hook", "type": "webhook", "settings": {"url": "not a url https://u:hunter2@x.example/"}}
    resp = await client.post("/api/v1/channels", json=channel, headers=auth())
    assert resp.status in (400, 422)
    assert "hunter2" not in await resp.text()
