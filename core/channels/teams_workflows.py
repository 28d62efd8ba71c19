"""Microsoft Teams through a Workflows (Power Automate) webhook: an Adaptive Card posted to a chat or channel.

The card comes from ``context.renderers["teams_workflows"]`` (the bot layer's cards; it must keep the card
under 28 KB). Without a renderer a small card with the title, the facts and Action.OpenUrl buttons to the
web ack page is sent. The final body is measured here as well: over 28 KB it is a permanent failure, as
Teams would drop it. Workflows cannot edit a posted card, so this channel does not update. They accept about
four requests a second and answer 429 with Retry-After beyond that; success is 202 Accepted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, ClassVar

from pydantic import Field

from core.channels.base import HttpChannel, HttpChannelSettings, Notification, SendResult, json_bytes
from core.channels.errors import PermanentChannelError
from core.secrets import SecretRef

ADAPTIVE_CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"


def fallback_card(note: Notification) -> dict[str, Any]:
    """A small Adaptive Card for when no renderer was injected: title, summary, facts, links to the ack page."""
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": (f"[{note.severity.value.upper()}] " if note.severity else "") + note.title,
            "weight": "Bolder",
            "size": "Medium",
            "wrap": True,
        }
    ]
    if note.summary:
        body.append({"type": "TextBlock", "text": note.summary[:2000], "wrap": True})
    body.append({"type": "FactSet", "facts": [{"title": label, "value": value} for label, value in note.facts()]})
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        # 1.4 is what Workflows render everywhere; Action.Execute (1.5) needs a bot, which this is not.
        "version": "1.4",
        "body": body,
    }
    actions = [{"type": "Action.OpenUrl", "title": b.label or b.choice, "url": b.url} for b in note.buttons]
    actions += [{"type": "Action.OpenUrl", "title": title[:100], "url": url} for title, url in note.links[:3]]
    if actions:
        card["actions"] = actions
    return card


def envelope(card: Mapping[str, Any]) -> dict[str, Any]:
    """The message document Workflows' "When a Teams webhook request is received" trigger expects."""
    return {
        "type": "message",
        "attachments": [{"contentType": ADAPTIVE_CARD_CONTENT_TYPE, "contentUrl": None, "content": card}],
    }


class TeamsWorkflowsSettings(HttpChannelSettings):
    """The workflow's HTTP trigger URL, a secret: its sig= parameter is the only credential."""

    url: SecretRef = Field(description="reference to the workflow's HTTP POST URL")


class TeamsWorkflowsChannel(HttpChannel):
    """Posts an Adaptive Card to a Teams Workflows webhook."""

    type: ClassVar[str] = "teams_workflows"
    Settings = TeamsWorkflowsSettings
    settings: TeamsWorkflowsSettings
    supports_update: ClassVar[bool] = False
    # Chat is for people looking now: three quick attempts (about 1s, 2s, 4s apart), then the dead-letter queue and
    # the channel's health say why, while someone can still act. 429s are not counted, and are waited out for at
    # most ten minutes: a card later than that is about a state that has likely changed.
    RETRY_FOR: ClassVar[timedelta] = timedelta(minutes=10)
    MAX_ATTEMPTS: ClassVar[int | None] = 3
    BACKOFF_BASE: ClassVar[float] = 1.0
    BACKOFF_MAX: ClassVar[float] = 4.0
    # Workflows webhooks take four requests a second.
    RATE_PER_SECOND: ClassVar[float] = 4.0
    # Teams drops webhook messages over 28 KB.
    MAX_BODY_BYTES = 28 * 1024

    def build_body(self, note: Notification) -> bytes:
        """The encoded message; PermanentChannelError if it is over the 28 KB Teams accepts."""
        renderer = self.context.renderers.get("teams_workflows")
        card = renderer(note) if renderer is not None else fallback_card(note)
        body = json_bytes(envelope(card))
        if len(body) > self.MAX_BODY_BYTES:
            raise PermanentChannelError(
                f"teams_workflows channel {self.name!r}: the message is {len(body)} bytes, "
                f"over the {self.MAX_BODY_BYTES} bytes Teams accepts from a webhook"
            )
        return body

    def describe_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> str:
        """Power Automate answers {"error": {"code", "message"}}: quote them."""
        try:
            document = json.loads(body)
        except ValueError:
            return super().describe_error(status, body, headers)
        error = document.get("error") if isinstance(document, dict) else None
        if isinstance(error, dict):
            return f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")[: self.MAX_ERROR_DETAIL]
        return super().describe_error(status, body, headers)

    async def send(self, note: Notification) -> SendResult:
        """Post the card."""
        url = self.resolve_secret_url(self.settings.url)
        response = await self.request("POST", url, body=self.build_body(note))
        return SendResult(message_ref=None, status_code=response.status)
