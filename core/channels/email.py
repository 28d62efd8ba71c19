"""The email channel: SMTP through aiosmtplib, plain text and HTML, with the choices as links to the web ack page.

Receivers dedupe by Message-ID, which is derived from the delivery's idempotency key: a retry after an
uncertain failure (the connection dropped after DATA) produces the same Message-ID. Updates are sent as
replies (In-Reply-To / References) so that mail clients thread them under the first message.

One refused recipient does not fail the delivery: the refusals are reported in SendResult.detail and
logged; only when every recipient is refused does the send fail. SMTP 4xx answers are transient, 5xx
permanent, and connection trouble transient.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import logging
import re
from collections.abc import Mapping
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr
from typing import Any, ClassVar, Literal

import aiosmtplib
from pydantic import ConfigDict, Field, field_validator, model_validator

from core.channels import safety
from core.channels.base import BaseChannel, ChannelContext, ChannelSettings, Notification, SendResult
from core.channels.email_views import digest_html, page_start, report_html
from core.channels.errors import ChannelError, PermanentChannelError, TransientChannelError
from core.channels.signing import DELIVERY_ID_HEADER, ORIGIN_HEADER
from core.models.common import utcnow
from core.models.deliveries import DeliveryPurpose
from core.secrets import SecretRef

logger = logging.getLogger(__name__)

# Deliberately simple: one @, no spaces or angle brackets; the SMTP server is the real judge.
_ADDRESS_RE = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+$")
_MSGID_SAFE_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,200}$")
_DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}


def _check_address(address: str) -> str:
    if not _ADDRESS_RE.match(address.strip()):
        raise ValueError(f"{address!r} is not an email address")
    return address.strip()


class EmailSettings(ChannelSettings):
    """The SMTP server, the credentials, the envelope."""

    host: str = Field(min_length=1, max_length=255)
    port: int | None = Field(default=None, ge=1, le=65535, description="default: 587, 465 with tls, 25 with none")
    security: Literal["starttls", "tls", "none"] = "starttls"
    validate_certs: bool = True
    username: str | None = None
    password: SecretRef | None = None
    from_: str = Field(alias="from", description='the sender, "ackbot@example.com" or "ackbot <ackbot@example.com>"')
    to: list[str] = Field(default_factory=list, max_length=100)
    cc: list[str] = Field(default_factory=list, max_length=100)
    timeout: float = Field(default=30.0, gt=0, le=300, description="seconds for each SMTP step")
    message_id_domain: str | None = Field(
        default=None, max_length=255, description="right-hand side of Message-ID; default: the sender's domain"
    )
    subject_prefix: str = Field(default="", max_length=50)
    allow_private: bool = Field(
        default=False,
        description="allow an SMTP server on loopback, private, link-local and other non-public addresses",
    )

    # "from" is a Python keyword: the field is from_, read and written as "from".
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    @field_validator("from_")
    @classmethod
    def _sender(cls, value: str) -> str:
        _name, address = parseaddr(value)
        _check_address(address)
        if "\r" in value or "\n" in value:
            raise ValueError("the sender contains a line break")
        return value

    @field_validator("to", "cc")
    @classmethod
    def _recipients(cls, values: list[str]) -> list[str]:
        return [_check_address(v) for v in values]

    @model_validator(mode="after")
    def _credentials_pair(self) -> EmailSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self

    @property
    def sender_address(self) -> str:
        return parseaddr(self.from_)[1]


def _one_line(text: str) -> str:
    return " ".join(text.split())


class EmailChannel(BaseChannel):
    """Mail through an SMTP server: one connection per delivery, multipart/alternative text and HTML."""

    type: ClassVar[str] = "email"
    Settings = EmailSettings
    settings: EmailSettings
    supports_update: ClassVar[bool] = True
    # Mail servers either take a message or have said why not; three tries within an hour cover greylisting and
    # restarts. Longer is the relay's job: once it has the message it queues and retries for days itself, so a
    # relay refusing us for an hour is a fault of configuration that the dead-letter queue should show.
    RETRY_FOR: ClassVar[timedelta] = timedelta(hours=1)
    MAX_ATTEMPTS: ClassVar[int | None] = 3
    BACKOFF_BASE: ClassVar[float] = 30.0
    BACKOFF_MAX: ClassVar[float] = 600.0
    # A relay rarely minds; mailbox providers throttle bursts, so stay modest.
    RATE_PER_SECOND: ClassVar[float] = 5.0
    # RFC 5322 recommends 78 characters a line; subjects fold, but long ones are truncated by clients anyway.
    MAX_SUBJECT = 200

    def __init__(self, name: str, settings: ChannelSettings, context: ChannelContext) -> None:
        if not isinstance(settings, EmailSettings):
            raise TypeError(f"EmailChannel needs EmailSettings, not {type(settings).__name__}")
        super().__init__(name, settings, context)

    # ------------------------------------------------------------ message

    def message_id(self, key: str) -> str:
        """<{key}@{domain}>, the key hashed if it holds characters a Message-ID cannot."""
        domain = self.settings.message_id_domain or self.settings.sender_address.rpartition("@")[2]
        local = key if _MSGID_SAFE_RE.match(key) else hashlib.sha256(key.encode("utf-8")).hexdigest()
        return f"<{local}@{domain}>"

    def subject(self, note: Notification, *, reply: bool = False) -> str:
        """'[SEVERITY] title' ('[APPROVAL]' without a severity), 'Re: ' for an update."""
        tag = note.severity.value.upper() if note.severity else "APPROVAL" if note.approval else note.purpose.upper()
        subject = f"{self.settings.subject_prefix + ' ' if self.settings.subject_prefix else ''}[{tag}] "
        subject += _one_line(note.title)
        if len(subject) > self.MAX_SUBJECT:
            subject = subject[: self.MAX_SUBJECT - 1] + "…"
        return f"Re: {subject}" if reply else subject

    def render_text(self, note: Notification, *, reply: bool = False) -> str:
        """The plain-text part."""
        lines = [note.title, "=" * min(len(note.title), 78), ""]
        if reply:
            lines += [f"Update: now {note.status}.", ""]
        if note.summary:
            lines += [note.summary, ""]
        width = max((len(label) for label, _ in note.facts()), default=0)
        lines += [f"{label + ':':<{width + 1}} {value}" for label, value in note.facts()]
        if note.links:
            lines += ["", "Links:"] + [f"  {title}: {url}" for title, url in note.links]
        if note.buttons:
            lines += ["", "Decide:"] + [f"  {b.label or b.choice}: {b.url}" for b in note.buttons]
        lines += ["", "--", f"ackbot delivery {note.delivery_id}"]
        return "\n".join(lines) + "\n"

    def render_html(self, note: Notification, *, reply: bool = False) -> str:
        """The HTML part; every piece of event content is escaped."""
        # Digests and reports are tables (email_views.py); their views escape every piece of content too.
        if note.purpose is DeliveryPurpose.digest and "digest" in note.extra:
            return digest_html(note.extra)
        if note.purpose is DeliveryPurpose.report and "report" in note.extra:
            return report_html(note.extra)
        e = html.escape
        parts = page_start(note.title)
        if reply:
            parts.append(f"<p><strong>Update:</strong> now {e(note.status)}.</p>")
        if note.summary:
            parts.append(f'<p style="white-space: pre-wrap;">{e(note.summary)}</p>')
        parts.append('<table cellpadding="4" style="border-collapse: collapse;">')
        parts += [
            f'<tr><th align="left" valign="top">{e(label)}</th><td>{e(value)}</td></tr>'
            for label, value in note.facts()
        ]
        parts.append("</table>")
        if note.links:
            parts.append("<ul>")
            parts += [f'<li><a href="{e(url)}">{e(title)}</a></li>' for title, url in note.links]
            parts.append("</ul>")
        if note.buttons:
            parts.append("<p>")
            parts += [
                f'<a href="{e(b.url)}" style="display: inline-block; padding: 8px 16px; margin-right: 8px; '
                f'border: 1px solid #1264a3; border-radius: 4px; text-decoration: none;">{e(b.label or b.choice)}</a>'
                for b in note.buttons
            ]
            parts.append("</p>")
        parts.append(f'<p style="color: #616061; font-size: 12px;">ackbot delivery {e(note.delivery_id)}</p>')
        parts.append("</body></html>")
        return "\n".join(parts) + "\n"

    def recipients(self, note: Notification) -> tuple[list[str], list[str]]:
        """(to, cc): a person target with an address replaces the configured lists."""
        if note.target and _ADDRESS_RE.match(note.target):
            return [note.target], []
        return list(self.settings.to), list(self.settings.cc)

    def build_message(self, note: Notification, *, in_reply_to: str | None = None) -> EmailMessage:
        """The complete message for a notification (a reply to in_reply_to when given)."""
        to, cc = self.recipients(note)
        if not to and not cc:
            raise PermanentChannelError(f"email channel {self.name!r}: no recipients (set to or cc)")
        reply = in_reply_to is not None
        message = EmailMessage()
        message["Subject"] = self.subject(note, reply=reply)
        name, address = parseaddr(self.settings.from_)
        message["From"] = formataddr((name, address)) if name else address
        if to:
            message["To"] = ", ".join(to)
        if cc:
            message["Cc"] = ", ".join(cc)
        message["Date"] = format_datetime(utcnow())
        message["Message-ID"] = self.message_id(note.idempotency_key)
        if in_reply_to:
            message["In-Reply-To"] = in_reply_to
            message["References"] = in_reply_to
        # RFC 3834: automated mail; vacation responders and ticket systems must not answer it.
        message["Auto-Submitted"] = "auto-generated"
        message[DELIVERY_ID_HEADER] = note.idempotency_key
        message[ORIGIN_HEADER] = self.context.origin or self.context.public_url or "ackbot"
        message.set_content(self.render_text(note, reply=reply))
        message.add_alternative(self.render_html(note, reply=reply), subtype="html")
        return message

    # ------------------------------------------------------------ sending

    def _client(self) -> aiosmtplib.SMTP:
        security = self.settings.security
        password = self.resolve_secret(self.settings.password) if self.settings.password else None
        return aiosmtplib.SMTP(
            hostname=self.settings.host,
            port=self.settings.port or _DEFAULT_PORTS[security],
            username=self.settings.username,
            password=password,
            use_tls=security == "tls",
            start_tls=True if security == "starttls" else False,
            validate_certs=self.settings.validate_certs,
            timeout=self.settings.timeout,
        )

    def _error(self, exc: Exception) -> ChannelError:
        label = f"email channel {self.name!r} via {self.settings.host}"
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            codes = [r.code for r in exc.recipients]
            detail = "; ".join(f"{r.recipient}: {r.code} {_one_line(r.message)}" for r in exc.recipients[:10])
            message = self.redact(f"{label}: every recipient was refused: {detail}")
            # Any 4xx among them means a later attempt may get through.
            if any(400 <= code < 500 for code in codes):
                return TransientChannelError(message, status_code=max(codes, default=None))
            return PermanentChannelError(message, status_code=max(codes, default=None))
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            message = self.redact(f"{label}: {type(exc).__name__} {exc.code} {_one_line(exc.message)}")
            if 400 <= exc.code < 500:
                return TransientChannelError(message, status_code=exc.code)
            if 500 <= exc.code < 600:
                return PermanentChannelError(message, status_code=exc.code)
            return TransientChannelError(message, status_code=exc.code)
        message = self.redact(f"{label}: {type(exc).__name__}: {_one_line(str(exc))}")
        if isinstance(exc, OSError | TimeoutError):
            # Timeouts, refused and dropped connections, TLS handshakes: the network.
            return TransientChannelError(message)
        # What remains is the server and the settings disagreeing (no STARTTLS, no usable AUTH mechanism).
        return PermanentChannelError(message)

    async def _check_server(self) -> None:
        # The same destination rules as every HTTP channel: an SMTP host is as good a relay into the inside.
        port = self.settings.port or _DEFAULT_PORTS[self.settings.security]
        host = self.settings.host
        where = f"smtp://[{host}]:{port}" if ":" in host else f"smtp://{host}:{port}"
        try:
            async with asyncio.timeout(self.settings.timeout):
                await safety.check_endpoint(
                    host,
                    port,
                    where=where,
                    allow_private=self.settings.allow_private,
                    public_url=self.context.public_url,
                    own_urls=self.context.own_urls,
                )
        except TimeoutError:
            raise TransientChannelError(f"email channel {self.name!r}: resolving {host} timed out") from None

    async def _deliver(self, note: Notification, *, in_reply_to: str | None) -> SendResult:
        message = self.build_message(note, in_reply_to=in_reply_to)
        to, cc = self.recipients(note)
        await self._check_server()
        client = self._client()
        try:
            async with client:
                refused, _reply = await client.send_message(
                    message, sender=self.settings.sender_address, recipients=[*to, *cc]
                )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise self._error(exc) from None
        refused_detail = {address: f"{r.code} {_one_line(r.message)}" for address, r in refused.items()}
        if refused_detail:
            logger.warning(
                "email channel %r: %d of %d recipients refused for delivery %s: %s",
                self.name,
                len(refused_detail),
                len(to) + len(cc),
                note.delivery_id,
                refused_detail,
            )
        return SendResult(
            message_ref={"message_id": str(message["Message-ID"])},
            status_code=250,
            detail={"refused": refused_detail} if refused_detail else {},
        )

    async def send(self, note: Notification) -> SendResult:
        """Mail the notification to the configured (or targeted) recipients."""
        return await self._deliver(note, in_reply_to=None)

    async def update(self, message_ref: Mapping[str, Any], note: Notification) -> SendResult:
        """Mail the new state as a reply to the first message, so clients thread it."""
        previous = message_ref.get("message_id")
        return await self._deliver(note, in_reply_to=str(previous) if previous else None)

    def destination(self, note: Notification) -> str:
        """Pace per SMTP server."""
        return f"{self.name}:{self.settings.host}"
