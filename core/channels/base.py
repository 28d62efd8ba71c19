"""The Channel protocol every outbound channel implements, its errors, and the common base."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from core.models import Alert, Approval, DeliveryPurpose, Event, UtcDatetime


class ChannelError(Exception):
    """A delivery attempt failed; subclasses say whether trying again can help."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class TransientChannelError(ChannelError):
    """Worth another attempt later (time-outs, 5xx, 429); retry_after is the receiver's wish in seconds."""

    def __init__(self, message: str, *, status_code: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after


class PermanentChannelError(ChannelError):
    """Trying again cannot help (bad credentials, unknown destination, rejected payload)."""


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
    max_attempts: int
    rate_per_second: float

    def destination(self, note: Notification) -> str:
        """The key that pacing applies to (a Slack channel, a Teams conversation, a URL host)."""
        ...

    async def send(self, note: Notification) -> SendResult: ...

    async def update(self, message_ref: Mapping[str, Any], note: Notification) -> SendResult: ...

    async def close(self) -> None: ...


class ChannelSettings(BaseModel):
    """Base of each channel type's settings: unknown keys are errors; retries and pacing are overridable."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int | None = Field(default=None, ge=1, le=50)
    rate_per_second: float | None = Field(default=None, gt=0, le=1000)


@dataclass
class ChannelContext:
    """What the process lends every channel: the shared HTTP session, the public URL, the renderers."""

    http: aiohttp.ClientSession | None = None
    public_url: str = ""
    renderers: dict[str, Renderer] = field(default_factory=dict)
    user_agent: str = "ackbot"


class BaseChannel:
    """Common base: the service's limits live on each subclass as commented class constants."""

    type: ClassVar[str] = ""
    Settings: ClassVar[builtins.type[ChannelSettings]] = ChannelSettings
    supports_update: ClassVar[bool] = False
    # Attempts before a delivery is dead, and the backoff between them (seconds, exponential, full jitter).
    MAX_ATTEMPTS: ClassVar[int] = 5
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
