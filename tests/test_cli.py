"""The `ackbot` command's shared set-up: a config that does not load is reported, not a traceback; commands on the
database see the schema as they need it (migrated, or refused until `ackbot db upgrade`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main


def write_config(tmp_path: Path, extra: str = "") -> str:
    path = tmp_path / "ackbot.yml"
    path.write_text(f"database: {{url: 'sqlite+aiosqlite:///{tmp_path}/a.db'}}\n{extra}", encoding="utf-8")
    return str(path)


def test_db_commands_and_the_schema_they_need(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    assert main(["db", "current", "--config", config]) == 0
    assert "database at revision None" in capsys.readouterr().out
    # Commands that read ackbot's tables refuse a database this code has not migrated, and say what to do.
    for command in (["keys", "list"], ["audit", "verify"]):
        assert main([*command, "--config", config]) == 1
        assert "run `ackbot db upgrade` first" in capsys.readouterr().err
    assert main(["db", "upgrade", "--config", config]) == 0
    upgraded = capsys.readouterr().out
    assert "database at revision None" not in upgraded and "(head " in upgraded
    revision = upgraded.split("revision ", 1)[1].split(" ", 1)[0]
    assert f"head {revision})" in upgraded
    assert main(["keys", "list", "--config", config]) == 0
    assert main(["audit", "verify", "--config", config]) == 0
    assert "audit log OK: 0 rows" in capsys.readouterr().out


def test_a_config_that_does_not_load_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = write_config(tmp_path, "channels: [{name: console, type: console, colour: red}]\n")
    for command in (["db", "current"], ["keys", "list"], ["send-test", "console"], ["report", "preview"]):
        assert main([*command, "--config", broken]) == 1, command
        assert "colour" in capsys.readouterr().err
    # Commands that start the runtime also check each channel's settings, which the schema alone cannot.
    unknown_type = write_config(tmp_path, "channels: [{name: fax, type: fax}]\n")
    assert main(["db", "current", "--config", unknown_type]) == 0
    capsys.readouterr()
    for command in (["send-test", "fax"], ["report", "send"]):
        assert main([*command, "--config", unknown_type]) == 1, command
        assert "unknown channel type 'fax'" in capsys.readouterr().err
