"""Slack incoming webhooks: Block Kit posted to the one channel a webhook URL is bound to.

The blocks come from ``context.renderers["slack"]`` (the cards of the bot layer; core does not import them).
Without a renderer a plain mrkdwn message is sent, so the channel works from a bare CLI too.

Incoming webhooks cannot edit what they posted (no ``ts`` comes back), so this channel does not update.
Slack answers errors as short text bodies with a status code: ``invalid_payload`` (400), ``action_prohibited``
(403), ``channel_not_found`` / ``no_service`` (404), ``channel_is_archived`` (410), ``rollup_error`` (500),
429 with Retry-After when posting faster than about one message a second.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, ClassVar

from pydantic import Field

from core.channels.base import HttpChannel, HttpChannelSettings, Notification, SendResult, error_for_status, json_bytes
from core.channels.errors import ChannelError, PermanentChannelError, TransientChannelError
from core.secrets import SecretRef

# What each error Slack names means, for an operator reading a dead delivery.
SLACK_ERRORS: dict[str, str] = {
    "invalid_payload": "Slack could not read the message (malformed JSON or blocks)",
    "invalid_blocks": "a block is invalid",
    "invalid_blocks_format": "the blocks are not a list of block objects",
    "missing_text_or_fallback_or_attachments": "the message has no text",
    "no_text": "the message has no text",
    "too_many_attachments": "too many attachments",
    "user_not_found": "the user the message names does not exist",
    "action_prohibited": "the workspace forbids this webhook from posting here",
    "posting_to_general_channel_denied": "only admins may post to this channel",
    "invalid_token": "the webhook URL is no longer valid",
    "channel_not_found": "the webhook's channel no longer exists",
    "channel_is_archived": "the webhook's channel is archived",
    "no_service": "the webhook was removed or disabled",
    "no_service_id": "the webhook URL is incomplete",
    "no_team": "the workspace no longer exists or the URL is incomplete",
    "team_disabled": "the workspace is disabled",
    "no_active_hooks": "the webhook is disabled",
    "rollup_error": "a Slack-side error",
    "rate_limited": "posting too fast",
}
# Errors a retry cannot fix, whatever status code came with them.
PERMANENT_ERRORS = frozenset(SLACK_ERRORS) - {"rollup_error", "rate_limited"}


def _escape(text: str) -> str:
    # mrkdwn needs only these three escaped (https://api.slack.com/reference/surfaces/formatting#escaping).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fallback_message(note: Notification) -> dict[str, Any]:
    """A plain mrkdwn message for when no Block Kit renderer was injected."""
    tag = f"[{note.severity.value.upper()}] " if note.severity else ""
    lines = [f"*{_escape(tag + note.title)}*"]
    if note.summary:
        lines.append(_escape(note.summary[:2000]))
    lines.append(" · ".join(f"{_escape(label)}: {_escape(value)}" for label, value in note.facts()))
    if note.buttons:
        lines.append(" | ".join(f"<{b.url}|{_escape(b.label or b.choice)}>" for b in note.buttons))
    return {"text": "\n".join(lines)}


class SlackWebhookSettings(HttpChannelSettings):
    """The incoming webhook URL, a secret: anyone holding it can post to the channel."""

    url: SecretRef = Field(description="reference to the https://hooks.slack.com/services/... URL")


class SlackWebhookChannel(HttpChannel):
    """Posts Block Kit to a Slack incoming webhook."""

    type: ClassVar[str] = "slack_webhook"
    Settings = SlackWebhookSettings
    settings: SlackWebhookSettings
    supports_update: ClassVar[bool] = False
    # Chat is for people looking now: three quick attempts (about 1s, 2s, 4s apart), then the dead-letter queue and
    # the channel's health say why, while someone can still act. Slack's 429s are not counted, and are waited out
    # for at most ten minutes: a card later than that is about a state that has likely changed.
    RETRY_FOR: ClassVar[timedelta] = timedelta(minutes=10)
    MAX_ATTEMPTS: ClassVar[int | None] = 3
    BACKOFF_BASE: ClassVar[float] = 1.0
    BACKOFF_MAX: ClassVar[float] = 4.0
    # Slack allows about one message a second per webhook, with short bursts.
    RATE_PER_SECOND: ClassVar[float] = 1.0
    # Block Kit limits: 50 blocks a message; text beyond 40 000 characters is truncated by Slack.
    MAX_BLOCKS = 50
    MAX_TEXT = 40000

    def build_message(self, note: Notification) -> dict[str, Any]:
        """The JSON posted: the injected renderer's message, with a notification text for clients without blocks."""
        renderer = self.context.renderers.get("slack")
        if renderer is None:
            return fallback_message(note)
        rendered: Any = renderer(note)
        # A renderer may hand back the message or just its blocks.
        message = dict(rendered) if isinstance(rendered, Mapping) else {"blocks": list(rendered)}
        blocks = message.get("blocks")
        if isinstance(blocks, list) and len(blocks) > self.MAX_BLOCKS:
            raise PermanentChannelError(
                f"slack_webhook channel {self.name!r}: {len(blocks)} blocks, Slack takes at most {self.MAX_BLOCKS}"
            )
        if not message.get("text"):
            # Notifications and screen readers show this text; Slack warns when blocks come without it.
            tag = f"[{note.severity.value.upper()}] " if note.severity else ""
            message["text"] = _escape(tag + note.title)
        if isinstance(message["text"], str) and len(message["text"]) > self.MAX_TEXT:
            message["text"] = message["text"][: self.MAX_TEXT - 1] + "…"
        return message

    def describe_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> str:
        """Slack's error code and what it means."""
        code = body[:200].decode("utf-8", errors="replace").strip()
        meaning = SLACK_ERRORS.get(code)
        return f"{code} ({meaning})" if meaning else super().describe_error(status, body, headers)

    def error_for_response(
        self, status: int, message: str, body: bytes, *, retry_after: float | None = None
    ) -> ChannelError:
        """Slack's named errors decide over the status code: a removed webhook stays removed."""
        code = body[:200].decode("utf-8", errors="replace").strip()
        if code in PERMANENT_ERRORS:
            return PermanentChannelError(message, status_code=status)
        if code in ("rate_limited", "rollup_error"):
            return TransientChannelError(message, status_code=status, retry_after=retry_after)
        return error_for_status(status, message, retry_after=retry_after)

    async def send(self, note: Notification) -> SendResult:
        """Post the message."""
        url = self.resolve_secret_url(self.settings.url)
        response = await self.request("POST", url, body=json_bytes(self.build_message(note)))
        # Incoming webhooks answer "ok" and nothing that could address the message later.
        return SendResult(message_ref=None, status_code=response.status)
