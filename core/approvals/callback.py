"""The internal channel that delivers approval callbacks: a signed webhook to the URL the requester gave.

It is a WebhookChannel (same signature scheme, same outbound safety checks, same retries), registered by the
runtime under a reserved name; its URL comes from each delivery (`extra.url`) and its body is built by the
approvals module (`extra.body`).
"""

from __future__ import annotations

from core.channels.base import ChannelContext
from core.channels.webhook import WebhookChannel, WebhookSettings

CALLBACK_CHANNEL = "_callback"
# Stands for the generated secret, which lives in the database and not in the environment.
_GENERATED_SECRET_REF = "env:ACKBOT_GENERATED_CALLBACK_SECRET"


class CallbackChannel(WebhookChannel):
    """Signs with the configured callback secret, or with the one generated and stored at first start."""

    def __init__(
        self,
        *,
        context: ChannelContext,
        secret: str,
        secret_ref: str | None = None,
        allow_private: bool = False,
        timeout: float = 10.0,
    ) -> None:
        settings = WebhookSettings(
            url=None, secret=secret_ref or _GENERATED_SECRET_REF, allow_private=allow_private, timeout=timeout
        )
        super().__init__(CALLBACK_CHANNEL, settings, context)
        self._secret = secret

    def resolve_secret(self, reference: str) -> str:
        """The generated secret for our placeholder reference; anything else resolves as usual."""
        if reference == _GENERATED_SECRET_REF:
            self._secret_values.add(self._secret)
            return self._secret
        return super().resolve_secret(reference)
