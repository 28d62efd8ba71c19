"""The `ackbot` command's shared set-up: a config that does not load is reported, not a traceback; commands on the
database see the schema as they need it (migrated, or refused until `ackbot db upgrade`)."""

from __future__ import annotations

import asyncio
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


def test_keys_callback_secret_prints_the_secret_the_service_signs_callbacks_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.app import build_runtime
    from core.channels import signing
    from core.config import load_config

    config = write_config(tmp_path)
    assert main(["keys", "callback-secret", "--config", config]) == 1  # the schema is not there yet
    assert "run `ackbot db upgrade` first" in capsys.readouterr().err
    assert main(["db", "upgrade", "--config", config]) == 0
    capsys.readouterr()

    async def served_secret() -> str:
        runtime = build_runtime(load_config(config)[0], run_dispatcher=False)
        await runtime.start()
        try:
            return runtime.approvals.keys.callback_secret
        finally:
            await runtime.stop()

    assert main(["keys", "callback-secret", "--config", config]) == 0
    shown = capsys.readouterr()
    printed = shown.out.strip()
    assert "warning" in shown.err and printed
    # The very secret the running service signs with (generated once, kept in the database): a receiver holding it
    # verifies a callback's X-Ackbot-Signature.
    assert asyncio.run(served_secret()) == printed
    body = b'{"approval_id": "apr_1", "state": "acknowledged"}'
    assert signing.verify(printed, body, signing.sign(asyncio.run(served_secret()), body))
    # A secret from the config file is the one printed.
    monkeypatch.setenv("ACKBOT_TEST_CALLBACK_SECRET", "s3cret-from-the-environment-0123")
    configured = write_config(tmp_path, "approvals: {callback_secret: 'env:ACKBOT_TEST_CALLBACK_SECRET'}\n")
    assert main(["keys", "callback-secret", "--config", configured]) == 0
    assert capsys.readouterr().out.strip() == "s3cret-from-the-environment-0123"


def test_the_readmes_callback_receiver_check_accepts_ackbots_signature_and_nothing_else() -> None:
    from core.channels import signing

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    code = readme.split("<!-- callback-receiver -->\n```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md (callback receiver)", "exec"), namespace)
    check = namespace["ackbot_signature_ok"]
    assert callable(check)
    body = b'{"approval_id": "apr_1", "state": "acknowledged"}'
    header = signing.sign(["old-secret", "the-secret"], body)
    assert check("the-secret", body, header) and check("old-secret", body, header)
    assert not check("another-secret", body, header)
    assert not check("the-secret", body + b" ", header)
    assert not check("the-secret", body, signing.sign("the-secret", body, timestamp=1_000))  # too old
    assert not check("the-secret", body, "v1=" + header.split("v1=", 1)[1])  # no timestamp
