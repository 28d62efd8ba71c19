"""The Channel protocol every outbound channel implements and the common base (the errors are in errors.py)."""

from __future__ import annotations

import asyncio
import builtins
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlsplit

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.channels import safety
from core.channels.errors import ChannelError, PermanentChannelError, TransientChannelError, safe_url
from core.channels.retry import RetryPolicy
from core.models.approvals import Approval
from core.models.common import Duration, Severity, UtcDatetime, format_duration
from core.models.deliveries import DeliveryPurpose
from core.models.events import Alert, Event
from core.secrets import SecretError, SecretPolicy, redact
from core.secrets import resolve_secret as read_secret
from core.url_redaction import redact_urls


class Button(BaseModel):
    """One choice offered on a message: the signed token a click carries and the web page for it."""

    choice: str
    label: str
    token: str
    url: str = Field(description="the web ack page for channels without buttons")
    confirm: bool = False


class Notification(BaseModel):
    """Everything a channel needs to render and send one message; built by the dispatcher."""

    model_config = ConfigDict(frozen=True)

    delivery_id: str
    idempotency_key: str
    tenant: str
    purpose: DeliveryPurpose
    channel: str
    target: str | None = None
    alert: Alert | None = None
    event: Event | None = None
    approval: Approval | None = None
    buttons: list[Button] = Field(default_factory=list)
    suppressed_count: int = 0
    public_url: str = ""
    created_at: UtcDatetime | None = None
    extra: dict[str, Any] = Field(default_factory=dict, description="purpose-specific data, e.g. a callback body")

    @property
    def title(self) -> str:
        if self.approval is not None:
            return self.approval.title
        if self.alert is not None:
            return self.alert.title
        if self.event is not None:
            return self.event.title
        return str(self.extra.get("title", "ackbot notification"))

    @property
    def summary(self) -> str:
        if self.approval is not None:
            return self.approval.summary
        if self.alert is not None:
            return self.alert.summary
        if self.event is not None:
            return self.event.summary
        return str(self.extra.get("summary", ""))

    @property
    def severity(self) -> Severity | None:
        """The alert's or the event's severity; None for a bare approval or callback."""
        if self.alert is not None:
            return self.alert.severity
        if self.event is not None:
            return self.event.severity
        return None

    @property
    def status(self) -> str:
        """What state the subject is in: the approval's state, else the alert's status, else the event's."""
        if self.approval is not None:
            return self.approval.state.value
        if self.alert is not None:
            return self.alert.status.value
        if self.event is not None:
            return self.event.status.value
        return self.purpose.value

    def facts(self) -> list[tuple[str, str]]:
        """The notification as labelled lines of plain text, the same for every text channel (email, Jira ...)."""
        out: list[tuple[str, str]] = [("Tenant", self.tenant)]
        if self.severity is not None:
            out.append(("Severity", self.severity.value))
        out.append(("Status", self.status))
        subject = self.alert or self.event
        if subject is not None:
            out.append(("Kind", subject.kind))
            scope = subject.scope
            for label, value in (("Namespace", scope.namespace), ("Repo", scope.repo), ("Digest", scope.digest)):
                if value:
                    out.append((label, value))
            if scope.labels:
                out.append(("Labels", ", ".join(f"{k}={v}" for k, v in sorted(scope.labels.items()))))
        if self.alert is not None:
            out.append(("First seen", self.alert.first_seen.isoformat()))
            out.append(("Last seen", self.alert.last_seen.isoformat()))
            if self.alert.event_count > 1:
                out.append(("Events", str(self.alert.event_count)))
            if self.alert.acknowledged_by:
                out.append(("Acknowledged by", self.alert.acknowledged_by))
        if self.approval is not None:
            if self.approval.requester:
                out.append(("Requested by", self.approval.requester))
            if self.approval.approvers:
                out.append(("Approvers", ", ".join(self.approval.approvers)))
            out.append(("Expires", self.approval.expires_at.isoformat()))
            if self.approval.decided_by:
                choice = self.approval.decided_choice.value if self.approval.decided_choice else self.approval.state
                out.append(("Decided", f"{choice} by {self.approval.decided_by}"))
        if self.suppressed_count:
            out.append(("Suppressed", self.suppressed_text))
        return out

    @property
    def suppressed_text(self) -> str:
        """What the message says about the similar notifications held back before it ("" when none were)."""
        if not self.suppressed_count:
            return ""
        # Ingest words it with the throttle window ("14 similar suppressed in the last hour") when it knows it.
        worded = self.extra.get("suppressed_text")
        return str(worded) if worded else f"{self.suppressed_count} similar notifications were held back"

    @property
    def links(self) -> list[tuple[str, str]]:
        """(title, url) of the links the alert or event carries."""
        subject = self.alert or self.event
        if subject is None:
            return []
        return [(link.title or link.url, link.url) for link in subject.links]


@dataclass(frozen=True)
class SendResult:
    """What a successful send or update leaves behind: the reference needed to edit the message later."""

    message_ref: dict[str, Any] | None = None
    status_code: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


Renderer = Callable[[Notification], dict[str, Any]]


@runtime_checkable
class Channel(Protocol):
    """An outbound channel: sends a notification and, where the platform allows, edits it later."""

    name: str
    type: ClassVar[str]
    supports_update: ClassVar[bool]
    max_attempts: int | None
    rate_per_second: float
    retry: RetryPolicy

    def destination(self, note: Notification) -> str:
        """The key that pacing applies to (a Slack channel, a Teams conversation, a URL host)."""
        ...

    async def send(self, note: Notification) -> SendResult: ...

    async def update(self, message_ref: Mapping[str, Any], note: Notification) -> SendResult: ...

    async def close(self) -> None: ...


# A delivery failing for longer than this is news to nobody: the dead-letter queue is where it is seen.
MAX_RETRY_FOR = timedelta(days=7)


class ChannelSettings(BaseModel):
    """Base of each channel type's settings: unknown keys are errors; retries and pacing are overridable."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int | None = Field(
        default=None, ge=1, le=50, description="tries before a delivery is dead; 429s and Retry-After not counted"
    )
    retry_for: Duration | None = Field(
        default=None,
        description="how long a failing delivery is retried before it is dead, e.g. 6h (default: the channel type's)",
    )
    rate_per_second: float | None = Field(default=None, gt=0, le=1000)

    @field_validator("retry_for")
    @classmethod
    def _within_a_week(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value > MAX_RETRY_FOR:
            raise ValueError(
                f"at most {format_duration(MAX_RETRY_FOR)}; a delivery failing longer is for the dead letters"
            )
        return value


@dataclass
class ChannelContext:
    """What the process lends every channel: the shared HTTP session, the public URL, the renderers."""

    http: aiohttp.ClientSession | None = None
    public_url: str = ""
    renderers: dict[str, Renderer] = field(default_factory=dict)
    user_agent: str = "ackbot"
    # Identifies this ackbot installation on every outbound request (X-Ackbot-Origin), so a receiver, or
    # another ackbot, can recognise and drop what came from here and loops cannot form.
    origin: str = ""
    # The references a channel made through the API may resolve (checked at every use, as the allowlist may have
    # shrunk since the channel was made); None for the config file's channels, which may resolve any.
    secret_policy: SecretPolicy | None = None
    # Other URLs that reach this process besides public_url (its listening address): no channel may post there.
    own_urls: tuple[str, ...] = ()


class BaseChannel:
    """Common base: the service's limits live on each subclass as commented class constants."""

    type: ClassVar[str] = ""
    Settings: ClassVar[builtins.type[ChannelSettings]] = ChannelSettings
    supports_update: ClassVar[bool] = False
    # How long a failing delivery is retried before it is dead (see retry.py), and, where set, how many tries
    # it gets within that (429s and Retry-After answers are not counted); the backoff between tries (seconds,
    # exponential from BACKOFF_BASE, capped at BACKOFF_MAX, full jitter). Each channel type says why its own.
    RETRY_FOR: ClassVar[timedelta] = timedelta(minutes=10)
    MAX_ATTEMPTS: ClassVar[int | None] = 5
    BACKOFF_BASE: ClassVar[float] = 1.0
    BACKOFF_MAX: ClassVar[float] = 60.0
    # Messages per second per destination that the receiver accepts.
    RATE_PER_SECOND: ClassVar[float] = 10.0

    def __init__(self, name: str, settings: ChannelSettings, context: ChannelContext) -> None:
        self.name = name
        self.settings = settings
        self.context = context
        self.max_attempts = settings.max_attempts or self.MAX_ATTEMPTS
        self.rate_per_second = settings.rate_per_second or self.RATE_PER_SECOND
        self.retry = RetryPolicy(
            retry_for=settings.retry_for if settings.retry_for is not None else self.RETRY_FOR,
            max_attempts=self.max_attempts,
            backoff_base=self.BACKOFF_BASE,
            backoff_max=self.BACKOFF_MAX,
        )
        # Every secret value this channel has resolved, so that no error message it raises can carry one.
        self._secret_values: set[str] = set()

    def destination(self, note: Notification) -> str:
        return f"{self.name}:{note.target or ''}"

    async def send(self, note: Notification) -> SendResult:
        raise NotImplementedError

    async def update(self, message_ref: Mapping[str, Any], note: Notification) -> SendResult:
        raise PermanentChannelError(f"channel type {self.type} cannot edit a message it sent")

    async def close(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        """The channel as the API shows it: secrets are references, so settings are safe to return."""
        return {"name": self.name, "type": self.type, "settings": self.settings.model_dump(mode="json")}

    def resolve_secret(self, reference: str) -> str:
        """Resolve a SecretRef at send time; failing that, a PermanentChannelError naming only the reference."""
        try:
            if self.context.secret_policy is not None:
                self.context.secret_policy.check(reference)
            value = read_secret(reference)
        except SecretError as exc:
            raise PermanentChannelError(f"{self.type} channel {self.name!r}: {exc}") from None
        if not value:
            raise PermanentChannelError(f"{self.type} channel {self.name!r}: the secret {reference} is empty")
        self._secret_values.add(value)
        return value

    def redact(self, text: str) -> str:
        """Remove every secret this channel has resolved from a text bound for logs or error messages."""
        return redact_urls(redact(text, sorted(self._secret_values, key=len, reverse=True)))


# ---------------------------------------------------------------- HTTP channels


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Read a Retry-After header, delay-seconds or HTTP-date, as seconds from now (never negative)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # NaN and infinities parse as floats but mean nothing here.
        return max(0.0, seconds) if seconds == seconds and seconds != float("inf") else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; an undecorated one is read as such
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


# 4xx answers that describe a momentary state of the receiver rather than a fault in our request.
RETRYABLE_4XX = frozenset({408, 409, 425, 429})


def error_for_status(status: int, message: str, *, retry_after: float | None = None) -> ChannelError:
    """The error for a non-2xx HTTP status: 408/409/425/429, 5xx and oddities are transient, other 4xx and 3xx not."""
    if 300 <= status < 400:
        # Redirects are never followed: the new location has not passed the outbound safety checks.
        return PermanentChannelError(f"{message} (redirects are not followed)", status_code=status)
    if 400 <= status < 500 and status not in RETRYABLE_4XX:
        return PermanentChannelError(message, status_code=status)
    return TransientChannelError(message, status_code=status, retry_after=retry_after)


def json_bytes(payload: Any) -> bytes:
    """Compact UTF-8 JSON: the exact bytes an HTTP channel sends (and, for webhooks, signs)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


class HttpChannelSettings(ChannelSettings):
    """Settings every HTTP channel has."""

    allow_private: bool = Field(
        default=False,
        description="allow loopback, private, link-local and other non-public destinations (internal services, tests)",
    )
    timeout: float = Field(default=10.0, gt=0, le=300, description="seconds for the whole request")


@dataclass(frozen=True)
class HttpResponse:
    """A successful answer, read whole (bodies are small; the read is capped)."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class HttpChannel(BaseChannel):
    """Base of the HTTP channels: outbound safety, one mapping of answers to errors, the shared session."""

    Settings: ClassVar[builtins.type[ChannelSettings]] = HttpChannelSettings
    settings: HttpChannelSettings
    # The most of a response body read: enough for any API's error document, not enough to exhaust memory.
    MAX_RESPONSE_BYTES: ClassVar[int] = 64 * 1024
    # The most of an error body quoted in an error message.
    MAX_ERROR_DETAIL: ClassVar[int] = 300

    def __init__(self, name: str, settings: ChannelSettings, context: ChannelContext) -> None:
        if not isinstance(settings, HttpChannelSettings):
            raise TypeError(f"{type(self).__name__} needs {self.Settings.__name__}, not {type(settings).__name__}")
        super().__init__(name, settings, context)
        self._own_http: aiohttp.ClientSession | None = None

    def resolve_secret_url(self, reference: str) -> str:
        """Resolve a SecretRef holding a URL; its long path segments and query values are redacted too."""
        url = self.resolve_secret(reference)
        try:
            parts = urlsplit(url)
        except ValueError:
            return url
        # Webhook URLs carry their credential in the path (Slack) or the query (Teams' sig=): each alone is a secret.
        pieces = [*parts.path.split("/"), *(value for _key, value in parse_qsl(parts.query))]
        self._secret_values.update(piece for piece in pieces if len(piece) >= 16)
        return url

    @property
    def origin(self) -> str:
        """The X-Ackbot-Origin value: the configured origin id, else the public URL, else "ackbot"."""
        return self.context.origin or self.context.public_url or "ackbot"

    def _http(self) -> aiohttp.ClientSession:
        if self.context.http is not None and not self.context.http.closed:
            return self.context.http
        if self._own_http is None or self._own_http.closed:
            # No session lent by the app (a CLI send-test, a test): own one, closed in close().
            self._own_http = aiohttp.ClientSession()
        return self._own_http

    async def close(self) -> None:
        if self._own_http is not None:
            await self._own_http.close()
            self._own_http = None

    def describe_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> str:
        """The receiver's own words about a failure, for the error message; services override to parse their format."""
        text = body[: self.MAX_ERROR_DETAIL * 4].decode("utf-8", errors="replace")
        return " ".join(text.split())[: self.MAX_ERROR_DETAIL]

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = "application/json",
    ) -> HttpResponse:
        """Send one request after the outbound safety checks; return a 2xx answer, raise a ChannelError for the rest."""
        where = safe_url(url)
        label = f"{self.type} channel {self.name!r}"
        try:
            # Resolving the host for the safety check is bounded too: a stuck DNS server must not stall a worker.
            async with asyncio.timeout(self.settings.timeout):
                await safety.check_destination(
                    url,
                    allow_private=self.settings.allow_private,
                    public_url=self.context.public_url,
                    own_urls=self.context.own_urls,
                )
        except TimeoutError:
            raise TransientChannelError(f"{label}: resolving {where} timed out") from None
        sent_headers = {"User-Agent": self.context.user_agent, "X-Ackbot-Origin": self.origin}
        if content_type is not None and body is not None:
            sent_headers["Content-Type"] = content_type
        sent_headers.update(headers or {})
        try:
            async with self._http().request(
                method,
                url,
                data=body,
                headers=sent_headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
            ) as response:
                status = response.status
                response_headers = CIMultiDictProxy(CIMultiDict(response.headers))
                data = await _read_capped(response, self.MAX_RESPONSE_BYTES)
        except TimeoutError:
            raise TransientChannelError(
                f"{label}: {method} {where} timed out after {self.settings.timeout:g}s"
            ) from None
        except aiohttp.InvalidURL:
            raise PermanentChannelError(f"{label}: invalid URL for {where}") from None
        except (aiohttp.ClientError, OSError) as exc:
            # Refused or reset connections, DNS and TLS failures, truncated answers: the network, not the request.
            # The exception is not chained: its text and attributes may hold the full URL, and with it a secret.
            detail = self._scrub(str(exc))
            raise TransientChannelError(
                f"{label}: {method} {where} failed: {type(exc).__name__}" + (f": {detail}" if detail else "")
            ) from None
        if 200 <= status < 300:
            return HttpResponse(status, response_headers, data)
        detail = self._scrub(self.describe_error(status, data, response_headers))
        message = f"{label}: {method} {where} answered HTTP {status}" + (f": {detail}" if detail else "")
        retry_after = parse_retry_after(response_headers.get("Retry-After"))
        raise self.error_for_response(status, message, data, retry_after=retry_after)

    def error_for_response(
        self, status: int, message: str, body: bytes, *, retry_after: float | None = None
    ) -> ChannelError:
        """The error a non-2xx answer raises; error_for_status unless a service knows better from the body."""
        return error_for_status(status, message, retry_after=retry_after)

    def _scrub(self, text: str) -> str:
        # URLs shrink to scheme://host[:port] (their paths and queries may be credentials), then secrets go.
        text = _URL_RE.sub(lambda match: safe_url(match.group(0)), text)
        return self.redact(" ".join(text.split()))[: self.MAX_ERROR_DETAIL]


_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        chunk = await response.content.read(limit - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)
