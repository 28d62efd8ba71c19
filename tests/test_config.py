"""The config file: validation with key paths and lines, environment overrides, check-config."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main
from core.config import ConfigError, default_config_text, load_config, parse_config
from core.models.common import Severity

GOOD = """\
server:
  port: 9090
api_keys:
  - name: ci
    key: env:CI_KEY
    tenant: acme
    scopes: [events.write]
people:
  - name: bob
    identities: {slack: U123, teams: 00000000-0000-0000-0000-000000000001, email: bob@example.com}
groups:
  - name: sre
    members: [bob]
channels:
  - name: ops
    type: console
rules:
  - name: crit
    match: {kinds: ["scanner.*"], min_severity: high, where: [{field: payload.verdict, op: eq, value: fail}]}
    actions: [{channel: ops, throttle: 15m}]
"""


def test_embedded_default_is_valid() -> None:
    config = parse_config(default_config_text(), environ=False)
    assert config.database.url.startswith("sqlite+aiosqlite://")
    assert [c.type for c in config.channels] == ["console"]
    assert config.rules and config.rules[0].actions[0].channel == "console"


def test_good_config_parses_with_durations_and_severity() -> None:
    config = parse_config(GOOD, environ=False)
    assert config.server.port == 9090
    rule = config.rules[0]
    assert rule.match.min_severity is Severity.high
    assert rule.actions[0].throttle is not None and rule.actions[0].throttle.total_seconds() == 900
    assert config.people[0].identities.slack == "U123"


@pytest.mark.parametrize(
    ("text", "path", "line", "message"),
    [
        ("server:\n  prot: 1\n", "server.prot", 2, "unknown key"),
        ("server:\n  port: 99999\n", "server.port", 2, "less than or equal to 65535"),
        ("api_keys:\n  - name: a\n    key: hunter2\n", "api_keys[0].key", 3, "secret reference"),
        ("rules:\n  - name: r\n    match:\n      min_severity: huge\n", "rules[0].match.min_severity", 4, "Input"),
        (
            "rules:\n  - name: r\n    actions:\n      - channel: x\n        throttle: soon\n",
            "rules[0].actions[0].throttle",
            5,
            "duration",
        ),
        ("database:\n  url: mysql://x\n", "database.url", 2, "sqlite+aiosqlite"),
    ],
)
def test_problems_name_key_path_and_line(text: str, path: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, file="f.yml", environ=False)
    problems = caught.value.problems
    assert any(p.path == path and p.line == line and message in p.message for p in problems), problems


def test_every_problem_is_reported_not_only_the_first() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("server:\n  prot: 1\n  port: -1\nrules: 5\n", environ=False)
    assert {p.path for p in caught.value.problems} >= {"server.prot", "server.port", "rules"}


def test_cross_references_are_checked() -> None:
    text = "channels: [{name: a, type: console}]\nrules: [{name: r, actions: [{channel: b}]}]\n"
    with pytest.raises(ConfigError, match="no channel named 'b'"):
        parse_config(text, environ=False)
    with pytest.raises(ConfigError, match="no person or group named 'ghost'"):
        parse_config("groups: [{name: g, members: [ghost]}]\n", environ=False)


def test_invalid_yaml_has_a_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("server:\n  port: [1,\n", file="bad.yml", environ=False)
    assert caught.value.problems[0].line is not None
    assert str(caught.value.problems[0]).startswith("bad.yml:")


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(GOOD)
    monkeypatch.setenv("ACKBOT_DATABASE_URL", "postgresql+asyncpg://u@db/ackbot")
    monkeypatch.setenv("ACKBOT_PORT", "7000")
    config, source = load_config(str(path))
    assert source == str(path)
    assert config.database.url == "postgresql+asyncpg://u@db/ackbot"
    assert config.server.port == 7000
    monkeypatch.setenv("ACKBOT_CONFIG", str(path))
    assert load_config(None)[1] == str(path)


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yml"
    good.write_text(GOOD)
    assert main(["check-config", str(good)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "1 rules" in out

    bad = tmp_path / "bad.yml"
    bad.write_text(GOOD.replace("    type: console", "    type: console\n    settings: {colour: red}"))
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:17: channels[0].settings.colour: unknown key" in err

    unknown_type = tmp_path / "unknown.yml"
    unknown_type.write_text(GOOD.replace("type: console", "type: carrier-pigeon"))
    assert main(["check-config", str(unknown_type)]) == 1
    assert "unknown channel type 'carrier-pigeon'" in capsys.readouterr().err
