"""The generic webhook channel: a signed JSON document POSTed (or PUT) to a URL.

The body, version 1 (new keys may be added; none will change meaning)::

    {
      "version": 1,
      "type": "notify" | "update" | "test",      # the delivery's purpose
      "delivery_id": "...",                       # the delivery
      "idempotency_key": "...",                   # same across retries; also the X-Ackbot-Delivery-Id header
      "tenant": "...", "channel": "...", "target": null | "...",
      "title": "...", "summary": "...",
      "severity": null | "info" | "low" | "medium" | "high" | "critical",
      "status": "open" | "acknowledged" | "resolved" | "firing" | "pending" | "denied" | ...,
      "alert": null | {...}, "event": null | {...}, "approval": null | {...},   # the stored models, as JSON
      "buttons": [{"choice": "acknowledge", "label": "...", "url": "https://ackbot/ack/<token>", "token": "..."}],
      "suppressed_count": 0,
      "suppressed_text": "14 similar suppressed in the last hour",   # only when a throttle window held some back
      "digest": {...},                            # only in type "digest": groups, top alerts, "more", link
      "report": {...},                            # only in type "report": open_alerts, pending_approvals, expiring
      "created_at": null | "2024-06-01T12:00:00+00:00",
      "in_reply_to": null | "<delivery id of the message an update refers to>"
    }

Buttons carry the ack token as well as the web ack URL, so that automation can decide through the HTTP API
without scraping the URL. That is no new exposure: the URL already contains the token, and the body is sent
only to the configured destination, signed. Treat the body as a credential for the approval it describes.

An approval callback (purpose "callback") sends ``note.extra["body"]`` exactly as the approvals module built
it, to ``note.extra["url"]``, else the approval's ``callback_url``, else the channel's ``url``.

Every request carries ``X-Ackbot-Signature`` (see core.channels.signing), ``X-Ackbot-Delivery-Id`` (the
idempotency key: receivers drop repeats), ``X-Ackbot-Origin`` and ``X-Ackbot-Type`` (the purpose).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from core.channels.base import HttpChannel, HttpChannelSettings, Notification, SendResult, json_bytes
from core.channels.errors import PermanentChannelError, safe_url
from core.channels.signing import DELIVERY_ID_HEADER, SIGNATURE_HEADER, sign
from core.models.deliveries import DeliveryPurpose
from core.secrets import SecretRef

PAYLOAD_VERSION = 1
TYPE_HEADER = "X-Ackbot-Type"

_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Headers ackbot sets itself: a configured header must not be able to forge or break them.
_RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        SIGNATURE_HEADER,
        DELIVERY_ID_HEADER,
        "X-Ackbot-Origin",
        TYPE_HEADER,
        "Content-Type",
        "Content-Length",
        "Host",
        "Transfer-Encoding",
        "Connection",
    )
)


def _is_reference(value: str) -> bool:
    return value.startswith(("env:", "file:"))


def _check_headers(headers: dict[str, str], *, references: bool) -> dict[str, str]:
    for name, value in headers.items():
        if not _TOKEN_RE.match(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"the header {name} is set by ackbot and cannot be configured")
        if "\r" in value or "\n" in value:
            raise ValueError(f"the value of header {name} contains a line break")
        if references and not _is_reference(value):
            raise ValueError(f"the value of header {name} must be a secret reference: env:NAME or file:PATH")
    return headers


class WebhookSettings(HttpChannelSettings):
    """Where to send, how, and the secret that signs each request."""

    url: str | None = Field(
        default=None,
        description="http(s) URL, or a secret reference (env:NAME, file:PATH) to one when the URL holds a token; "
        "may be left out when the channel only delivers approval callbacks",
    )
    method: Literal["POST", "PUT"] = "POST"
    secret: SecretRef = Field(description="the HMAC-SHA256 key for X-Ackbot-Signature")
    headers: dict[str, str] = Field(default_factory=dict, description="extra headers, sent as written")
    secret_headers: dict[str, str] = Field(
        default_factory=dict, description="extra headers whose values are secret references, e.g. Authorization"
    )

    @field_validator("url")
    @classmethod
    def _url_or_reference(cls, url: str | None) -> str | None:
        if url is None or _is_reference(url):
            return url
        if not url.startswith(("http://", "https://")):
            raise ValueError("an http:// or https:// URL, or a secret reference env:NAME / file:PATH")
        return url

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        return _check_headers(headers, references=False)

    @field_validator("secret_headers")
    @classmethod
    def _secret_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        return _check_headers(headers, references=True)


def build_payload(note: Notification, *, in_reply_to: str | None = None) -> Any:
    """The JSON document a webhook receives for a notification (see the module docstring for its shape)."""
    if note.purpose is DeliveryPurpose.callback and "body" in note.extra:
        return note.extra["body"]
    payload = {
        "version": PAYLOAD_VERSION,
        "type": note.purpose.value,
        "delivery_id": note.delivery_id,
        "idempotency_key": note.idempotency_key,
        "tenant": note.tenant,
        "channel": note.channel,
        "target": note.target,
        "title": note.title,
        "summary": note.summary,
        "severity": note.severity.value if note.severity else None,
        "status": note.status,
        "alert": note.alert.model_dump(mode="json") if note.alert else None,
        "event": note.event.model_dump(mode="json") if note.event else None,
        "approval": note.approval.model_dump(mode="json") if note.approval else None,
        "buttons": [{"choice": b.choice, "label": b.label, "url": b.url, "token": b.token} for b in note.buttons],
        "suppressed_count": note.suppressed_count,
        "created_at": note.created_at.isoformat() if note.created_at else None,
        "in_reply_to": in_reply_to,
    }
    # Keys that only some documents carry, added so that the everyday document keeps its exact shape.
    if note.suppressed_count and note.extra.get("suppressed_text"):
        payload["suppressed_text"] = note.suppressed_text
    if note.purpose is DeliveryPurpose.digest:
        payload["digest"] = note.extra.get("digest")
    if note.purpose is DeliveryPurpose.report:
        payload["report"] = note.extra.get("report")
    return payload


def encode(payload: Any) -> bytes:
    """The exact bytes sent (and signed): compact UTF-8 JSON."""
    return json_bytes(payload)


class WebhookChannel(HttpChannel):
    """Signed JSON to any HTTP endpoint; updates are delivered as further requests of type "update"."""

    type: ClassVar[str] = "webhook"
    Settings = WebhookSettings
    settings: WebhookSettings
    supports_update: ClassVar[bool] = True
    # Receivers are ours to guess, and often the automation that acts on an alert: retried for six hours, so a
    # receiver's outage or redeploy delays its alerts rather than losing them; no count of tries, the time decides.
    # Between tries 2 s doubling to 5 minutes, so a receiver coming back is not met by a flood.
    RETRY_FOR: ClassVar[timedelta] = timedelta(hours=6)
    MAX_ATTEMPTS: ClassVar[int | None] = None
    BACKOFF_BASE: ClassVar[float] = 2.0
    BACKOFF_MAX: ClassVar[float] = 300.0
    RATE_PER_SECOND: ClassVar[float] = 10.0
    # The largest body sent: an event may carry a large payload, a receiver should not have to take more.
    MAX_BODY_BYTES: ClassVar[int] = 1024 * 1024

    def _url_for(self, note: Notification) -> str:
        if note.purpose is DeliveryPurpose.callback:
            explicit = note.extra.get("url") or (note.approval.callback_url if note.approval else None)
            if explicit:
                return str(explicit)
        if self.settings.url is None:
            raise PermanentChannelError(f"webhook channel {self.name!r} has no url (it only delivers callbacks)")
        if _is_reference(self.settings.url):
            return self.resolve_secret_url(self.settings.url)
        return self.settings.url

    def destination(self, note: Notification) -> str:
        """Pace per receiving host (a callback may go anywhere; a secret URL is not exposed)."""
        try:
            return f"{self.name}:{safe_url(self._url_for(note))}"
        except PermanentChannelError:
            return f"{self.name}:"

    async def _deliver(self, note: Notification, *, in_reply_to: str | None) -> SendResult:
        url = self._url_for(note)
        body = encode(build_payload(note, in_reply_to=in_reply_to))
        if len(body) > self.MAX_BODY_BYTES:
            raise PermanentChannelError(
                f"webhook channel {self.name!r}: the body is {len(body)} bytes, over {self.MAX_BODY_BYTES}"
            )
        headers = dict(self.settings.headers)
        for name, reference in self.settings.secret_headers.items():
            headers[name] = self.resolve_secret(reference)
        headers[SIGNATURE_HEADER] = sign(self.resolve_secret(self.settings.secret), body)
        headers[DELIVERY_ID_HEADER] = note.idempotency_key
        headers[TYPE_HEADER] = note.purpose.value
        response = await self.request(self.settings.method, url, body=body, headers=headers)
        return SendResult(
            message_ref={"delivery_id": note.delivery_id, "idempotency_key": note.idempotency_key},
            status_code=response.status,
        )

    async def send(self, note: Notification) -> SendResult:
        """POST (or PUT) the signed document."""
        return await self._deliver(note, in_reply_to=None)

    async def update(self, message_ref: Mapping[str, Any], note: Notification) -> SendResult:
        """Send the new state as another signed document, naming the delivery it follows in in_reply_to."""
        previous = message_ref.get("delivery_id")
        return await self._deliver(note, in_reply_to=str(previous) if previous else None)
