"""manifest.yml: valid against Slack's manifest schema, equal to what the code generates, and the CLI filling it in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bot.cli import main
from bot.slack import BOT_SCOPES, EVENTS_PATH, manifest

ROOT = Path(__file__).resolve().parents[1]
# Slack's official manifest schema, kept in the repository (tests/schemas/README.md says where it comes from).
SCHEMA = ROOT / "tests" / "schemas" / "slack-manifest.schema.1.0.0.json"


def check(document: dict[str, Any]) -> None:
    """Validate as Slack's manifest schema (draft-07) does."""
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator(schema).validate(document)


def test_manifest_file_is_valid_and_generated_by_the_code() -> None:
    document = yaml.safe_load((ROOT / "manifest.yml").read_text(encoding="utf-8"))
    check(document)
    assert document == manifest()
    [command] = document["features"]["slash_commands"]
    assert command["command"] == "/ackbot" and command["usage_hint"]
    assert command["url"] == document["settings"]["interactivity"]["request_url"]
    assert command["url"].endswith(EVENTS_PATH)
    assert document["oauth_config"]["scopes"]["bot"] == list(BOT_SCOPES)
    assert set(BOT_SCOPES) == {"chat:write", "chat:write.public", "commands", "im:write", "users:read"}
    # HTTP mode by default, matching the README; no events are subscribed (commands and clicks suffice).
    assert document["settings"]["socket_mode_enabled"] is False
    assert "event_subscriptions" not in document["settings"]


def test_the_schema_refuses_a_broken_manifest() -> None:
    broken = manifest()
    broken["features"]["slash_commands"][0]["command"] = "ackbot"  # no leading slash
    with pytest.raises(jsonschema.ValidationError):
        check(broken)


def test_cli_prints_the_manifest_for_a_deployment(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["slack", "manifest", "--url", "https://ackbot.acme.org/", "--command", "/ops"]) == 0
    document = yaml.safe_load(capsys.readouterr().out)
    check(document)
    assert document["features"]["slash_commands"][0]["command"] == "/ops"
    assert document["features"]["slash_commands"][0]["url"] == "https://ackbot.acme.org/slack/events"
    assert document["settings"]["interactivity"]["request_url"] == "https://ackbot.acme.org/slack/events"

    assert main(["slack", "manifest", "--socket-mode"]) == 0
    document = yaml.safe_load(capsys.readouterr().out)
    check(document)
    assert document["settings"]["socket_mode_enabled"] is True
    assert "request_url" not in document["settings"]["interactivity"]
    assert "url" not in document["features"]["slash_commands"][0]

    assert main(["slack", "manifest", "--url", "http://insecure.example"]) == 2
    assert "--url https://" in capsys.readouterr().err
