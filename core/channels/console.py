"""The console channel: one readable log line per delivery, visible with no credentials at all."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, ClassVar

from core.channels.base import BaseChannel, ChannelSettings, Notification, SendResult
from core.models.common import Severity
from core.models.deliveries import DeliveryPurpose

LOGGER_NAME = "ackbot.console"
logger = logging.getLogger(LOGGER_NAME)

# Severe notifications log as warnings so that a WARNING-level log still shows what pages people.
_LEVELS = {Severity.critical: logging.WARNING, Severity.high: logging.WARNING}


class ConsoleSettings(ChannelSettings):
    """The console channel needs no settings beyond the common retry and pacing overrides."""


class ConsoleChannel(BaseChannel):
    """Logs each delivery on the "ackbot.console" logger: severity, tenant, title, ids and the choices offered.

    Not the choices' links: each carries an ack token, a credential that must never reach a log."""

    type: ClassVar[str] = "console"
    Settings = ConsoleSettings
    supports_update: ClassVar[bool] = True
    # Logging does not fail in ways a retry would fix; one more try within a minute covers a handler hiccup.
    RETRY_FOR: ClassVar[timedelta] = timedelta(minutes=1)
    MAX_ATTEMPTS: ClassVar[int | None] = 2
    # No receiver to protect: pacing only keeps a flood from drowning the rest of the log.
    RATE_PER_SECOND: ClassVar[float] = 100.0

    def format_line(self, note: Notification, *, update: bool = False) -> str:
        """The one line logged for a notification (its title quoted and escaped, so it cannot forge lines)."""
        severity = note.severity.value.upper() if note.severity else note.purpose.value.upper()
        parts = [
            "update" if update else note.purpose.value,
            f"[{severity}]",
            f"tenant={note.tenant}",
            json.dumps(note.title, ensure_ascii=False),
            f"status={note.status}",
        ]
        if note.alert is not None:
            parts.append(f"alert={note.alert.id}")
        elif note.event is not None:
            parts.append(f"event={note.event.id}")
        if note.approval is not None:
            parts.append(f"approval={note.approval.id}")
            if note.approval.decided_by:
                parts.append(f"by={json.dumps(note.approval.decided_by, ensure_ascii=False)}")
        if note.target:
            parts.append(f"target={note.target}")
        parts.append(f"delivery={note.delivery_id}")
        if note.suppressed_count:
            parts.append(f"suppressed={note.suppressed_count}")
            parts.append(json.dumps(note.suppressed_text, ensure_ascii=False))
        if note.purpose in (DeliveryPurpose.digest, DeliveryPurpose.report) and note.summary:
            # The first line of a digest or report: its totals ("14 alerts (37 events) until ...").
            parts.append(json.dumps(note.summary.splitlines()[0], ensure_ascii=False))
        if note.buttons:
            parts.append("choices=" + ",".join(button.choice for button in note.buttons))
        return " ".join(parts)

    def _log(self, note: Notification, *, update: bool) -> None:
        level = _LEVELS.get(note.severity, logging.INFO) if note.severity else logging.INFO
        logger.log(
            level,
            "%s",
            self.format_line(note, update=update),
            extra={"channel": self.name, "delivery_id": note.delivery_id, "tenant": note.tenant},
        )

    async def send(self, note: Notification) -> SendResult:
        """Log the notification."""
        self._log(note, update=False)
        return SendResult(message_ref={"delivery_id": note.delivery_id})

    async def update(self, message_ref: Mapping[str, Any], note: Notification) -> SendResult:
        """Log the update as a line of its own (a log cannot be edited)."""
        self._log(note, update=True)
        return SendResult(message_ref=dict(message_ref))
