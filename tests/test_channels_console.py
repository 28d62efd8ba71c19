"""The console channel: one readable log line per delivery on "ackbot.console", nothing printed."""

from __future__ import annotations

import logging

import pytest

from core.channels.base import ChannelContext
from core.channels.console import ConsoleChannel, ConsoleSettings
from core.models.approvals import ApprovalState
from tests.peers.notes import make_approval_note, make_note


def console() -> ConsoleChannel:
    return ConsoleChannel("console", ConsoleSettings(), ChannelContext())


async def test_one_line_with_severity_tenant_title_ids_and_choices(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO, logger="ackbot.console")
    result = await console().send(make_note())
    [record] = caplog.records
    assert record.name == "ackbot.console"
    assert record.levelno == logging.WARNING  # critical notifications log as warnings
    line = record.getMessage()
    assert "\n" not in line
    assert line.startswith("notify [CRITICAL] tenant=acme ")
    assert '"CVE-2024-0001 in <payments> & co"' in line
    assert "alert=al_1" in line and "delivery=dl_1" in line
    # The choices, never their links: a link carries its ack token, and tokens never reach a log.
    assert "choices=acknowledge,deny" in line
    assert "tok-ack-123" not in line and "/ack/" not in line
    assert "suppressed=2" in line
    assert result.message_ref == {"delivery_id": "dl_1"}
    out, err = capsys.readouterr()
    assert out == "" and err == ""


async def test_titles_cannot_forge_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ackbot.console")
    note = make_approval_note(approval=make_approval_note().approval.model_copy(update={"title": "a\nFAKE line"}))  # type: ignore[union-attr]
    await console().send(note)
    assert "\n" not in caplog.records[0].getMessage()
    assert '"a\\nFAKE line"' in caplog.records[0].getMessage()


async def test_update_logs_its_own_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ackbot.console")
    channel = console()
    assert channel.supports_update
    result = await channel.update({"delivery_id": "dl_0"}, make_approval_note(ApprovalState.acknowledged))
    [record] = caplog.records
    line = record.getMessage()
    assert record.levelno == logging.INFO
    assert line.startswith("update [UPDATE] tenant=acme ")
    assert "status=acknowledged" in line and "approval=ap_1" in line and 'by="alice"' in line
    assert result.message_ref == {"delivery_id": "dl_0"}


def test_settings_take_no_unknown_keys() -> None:
    with pytest.raises(ValueError):
        ConsoleSettings.model_validate({"colour": "red"})
