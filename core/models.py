"""The domain vocabulary of ackbot: pydantic models shared by every layer."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)


class Strict(BaseModel):
    """Base for models read from users: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


class Severity(StrEnum):
    info = "info"
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]

    @classmethod
    def parse_loose(cls, value: str | None, default: Severity | None = None) -> Severity:
        """Map the many spellings alert sources use (warning, error, page, p1 ...) onto our five levels."""
        fallback = default if default is not None else Severity.medium
        if not value:
            return fallback
        return _SEVERITY_ALIASES.get(value.strip().lower(), fallback)


_SEVERITY_RANK = {s: i for i, s in enumerate(Severity)}
_SEVERITY_ALIASES: dict[str, Severity] = {
    **{s.value: s for s in Severity},
    "none": Severity.info,
    "informational": Severity.info,
    "debug": Severity.info,
    "ok": Severity.info,
    "minor": Severity.low,
    "p4": Severity.low,
    "p5": Severity.info,
    "warning": Severity.medium,
    "warn": Severity.medium,
    "moderate": Severity.medium,
    "p3": Severity.medium,
    "error": Severity.high,
    "major": Severity.high,
    "p2": Severity.high,
    "page": Severity.critical,
    "crit": Severity.critical,
    "fatal": Severity.critical,
    "emergency": Severity.critical,
    "p1": Severity.critical,
}


_DURATION_RE = re.compile(
    r"^\s*(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m(?!s))?\s*(?:(\d+(?:\.\d+)?)s)?\s*(?:(\d+)ms)?\s*$"
)


# Longer than any window, lease or timeout makes sense for; also keeps datetime arithmetic from overflowing.
MAX_DURATION = timedelta(days=3660)


def parse_duration(value: object) -> timedelta:
    """Parse "90s", "5m", "1h30m", "2d" or a number of seconds into a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration such as 30s, 5m, 1h or 1d")
    if isinstance(value, int | float):
        if not value >= 0:  # also refuses NaN
            raise ValueError("a duration cannot be negative")
        return _bounded(seconds=value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match and any(match.groups()):
            days, hours, minutes, seconds, millis = (float(g) if g else 0.0 for g in match.groups())
            return _bounded(days=days, hours=hours, minutes=minutes, seconds=seconds, milliseconds=millis)
    raise ValueError("a duration such as 500ms, 30s, 5m, 1h or 1d")


def _bounded(**parts: float) -> timedelta:
    try:
        duration = timedelta(**parts)
    except OverflowError:
        duration = MAX_DURATION + timedelta(days=1)
    if duration > MAX_DURATION:
        raise ValueError(f"a duration of at most {MAX_DURATION.days}d")
    return duration


def format_duration(value: timedelta) -> str:
    """Render a timedelta the way parse_duration reads it."""
    if value.microseconds:
        if value < timedelta(seconds=1):
            return f"{value.microseconds // 1000}ms"
        return f"{value.total_seconds():g}s"
    total = int(value.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, total = divmod(total, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts) or "0s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_aware)]


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


# ---------------------------------------------------------------- events


class Link(Strict):
    title: str = Field(default="", max_length=200)
    url: str = Field(max_length=2000)

    @field_validator("url")
    @classmethod
    def _http_only(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("links must be http(s) URLs")
        return url


class Scope(Strict):
    namespace: str = Field(default="", max_length=256)
    repo: str = Field(default="", max_length=512)
    digest: str = Field(default="", max_length=256)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("labels")
    @classmethod
    def _label_sizes(cls, labels: dict[str, str]) -> dict[str, str]:
        if len(labels) > 100:
            raise ValueError("at most 100 labels")
        for key, value in labels.items():
            if len(key) > 128 or len(value) > 1024:
                raise ValueError(f"label {key[:40]!r} is too long (name 128, value 1024 characters)")
        return labels


class EventStatus(StrEnum):
    firing = "firing"
    resolved = "resolved"


class EventIn(Strict):
    """An event as a client sends it to POST /api/v1/events."""

    id: str | None = Field(default=None, min_length=1, max_length=200, description="client idempotency key")
    kind: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:/-]+$")
    tenant: str | None = Field(default=None, min_length=1, max_length=100)
    ts: UtcDatetime | None = None
    severity: Severity = Severity.info
    status: EventStatus = EventStatus.firing
    title: str = Field(min_length=1, max_length=500)
    summary: str = Field(default="", max_length=20000)
    scope: Scope = Field(default_factory=Scope)
    payload: dict[str, Any] = Field(default_factory=dict)
    dedup_key: str | None = Field(default=None, min_length=1, max_length=500)
    links: list[Link] = Field(default_factory=list, max_length=20)


class Event(BaseModel):
    """An event as ackbot stored it."""

    id: str
    client_id: str | None = None
    kind: str
    tenant: str
    ts: UtcDatetime
    received_at: UtcDatetime
    severity: Severity
    status: EventStatus = EventStatus.firing
    title: str
    summary: str = ""
    scope: Scope = Field(default_factory=Scope)
    payload: dict[str, Any] = Field(default_factory=dict)
    dedup_key: str | None = None
    links: list[Link] = Field(default_factory=list)
    alert_id: str | None = None
    source: str = "api"


class AlertStatus(StrEnum):
    open = "open"
    acknowledged = "acknowledged"
    resolved = "resolved"


class Alert(BaseModel):
    """The lasting thing that one or more events about the same subject open, update and resolve."""

    id: str
    tenant: str
    fingerprint: str
    kind: str
    status: AlertStatus
    severity: Severity
    title: str
    summary: str = ""
    scope: Scope = Field(default_factory=Scope)
    payload: dict[str, Any] = Field(default_factory=dict)
    links: list[Link] = Field(default_factory=list)
    first_seen: UtcDatetime
    last_seen: UtcDatetime
    resolved_at: UtcDatetime | None = None
    acknowledged_by: str | None = None
    acknowledged_at: UtcDatetime | None = None
    event_count: int = 1
    last_event_id: str | None = None


# ---------------------------------------------------------------- rules


class ConditionOp(StrEnum):
    eq = "eq"
    ne = "ne"
    gt = "gt"
    gte = "gte"
    lt = "lt"
    lte = "lte"
    in_ = "in"
    contains = "contains"
    regex = "regex"
    exists = "exists"


class Condition(Strict):
    field: str = Field(min_length=1, max_length=200, description='dotted path, e.g. "payload.verdict"')
    op: ConditionOp = ConditionOp.eq
    value: Any = None

    @model_validator(mode="after")
    def _check_value(self) -> Condition:
        if self.op is ConditionOp.regex:
            if not isinstance(self.value, str):
                raise ValueError("regex needs a string value")
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        elif self.op is ConditionOp.in_ and not isinstance(self.value, list):
            raise ValueError("in needs a list value")
        elif self.op is ConditionOp.exists and self.value is not None and not isinstance(self.value, bool):
            raise ValueError("exists takes true, false or no value")
        return self


class Match(Strict):
    kinds: list[str] = Field(default_factory=list, description="glob patterns; empty matches every kind")
    namespaces: list[str] = Field(default_factory=list)
    repos: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict, description="exact values or glob patterns")
    min_severity: Severity = Severity.info
    where: list[Condition] = Field(default_factory=list)


class ApprovalSpec(Strict):
    """What an approval asks for: who decides, how long they have, who is told when nobody does."""

    approvers: list[str] = Field(default_factory=list, description="person or group names")
    choices: list[str] = Field(default_factory=lambda: ["acknowledge", "deny", "escalate"])
    timeout: Duration = timedelta(hours=1)
    escalation: list[EscalationStep] = Field(default_factory=list)
    quorum: int = Field(default=1, ge=1, le=50)
    allow_self_approval: bool = False


class EscalationStep(Strict):
    after: Duration
    targets: list[str] = Field(default_factory=list, description="channel names, or person:NAME")
    approvers: list[str] = Field(default_factory=list)


class Weekday(StrEnum):
    mon = "mon"
    tue = "tue"
    wed = "wed"
    thu = "thu"
    fri = "fri"
    sat = "sat"
    sun = "sun"


_WINDOW_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]|24):([0-5]\d)$")


def check_timezone(name: str) -> str:
    """An IANA timezone name that zoneinfo knows (Europe/Berlin, UTC ...)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r}: use an IANA name such as Europe/Berlin or UTC") from None
    return name


class QuietHours(Strict):
    """A recurring quiet window: what is below min_severity is held back and released when it ends."""

    window: str = Field(description='local start-end, "22:00-06:00" (crosses midnight) or "00:00-24:00"')
    timezone: str = Field(default="UTC", description="an IANA timezone, e.g. Europe/Berlin")
    days: list[Weekday] = Field(default_factory=lambda: list(Weekday), description="the days the window starts on")
    min_severity: Severity = Field(default=Severity.critical, description="this and above still get through")
    release: Literal["end", "digest"] = Field(
        default="end", description="end: delivered when the window ends; digest: one digest at the end (or the next)"
    )

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        match = _WINDOW_RE.match(value.replace(" ", ""))
        if match is None or (match.group(3) == "24" and match.group(4) != "00"):
            raise ValueError('a window such as "22:00-06:00" (HH:MM-HH:MM, 24-hour clock)')
        if match.group(1) + match.group(2) == match.group(3) + match.group(4):
            raise ValueError("the window starts and ends at the same time")
        return value.replace(" ", "")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_timezone(value)

    @property
    def start_minute(self) -> int:
        """Minutes after local midnight the window starts."""
        hours, minutes = self.window.split("-")[0].split(":")
        return int(hours) * 60 + int(minutes)

    @property
    def end_minute(self) -> int:
        """Minutes after local midnight the window ends (1440 for 24:00)."""
        hours, minutes = self.window.split("-")[1].split(":")
        return int(hours) * 60 + int(minutes)


def _quiet_list(value: object) -> object:
    # One window may be written without the list around it.
    return [value] if isinstance(value, dict) else value


QuietHoursList = Annotated[list[QuietHours], BeforeValidator(_quiet_list)]

DIGEST_SCHEDULES = {"hourly": "0 * * * *", "daily": "0 9 * * *", "weekly": "0 9 * * 1"}
DIGEST_GROUPS = ("severity", "namespace", "repo", "kind", "status", "tenant")


def cron_expression(schedule: str) -> str:
    """The cron expression of a digest or report schedule: hourly, daily (09:00), weekly (Monday 09:00) or cron."""
    expression = DIGEST_SCHEDULES.get(schedule.strip().lower(), schedule.strip())
    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise ValueError("hourly, daily, weekly or a five-field cron expression such as '0 7 * * 1'")
    return expression


class DigestOptions(Strict):
    """How a digest action coalesces: when it flushes early, how it groups, what it lists and is titled."""

    max_items: int = Field(default=100, ge=1, le=10000, description="flush early once the window holds this many")
    top: int = Field(default=10, ge=0, le=100, description="how many items the message lists")
    group_by: list[str] = Field(default_factory=lambda: ["severity"], max_length=5)
    template: str | None = Field(
        default=None, max_length=200, description="title: {rule} {channel} {tenant} {count} {events} {window_end}"
    )
    timezone: str = Field(default="UTC", description="the timezone the schedule is read in")

    @field_validator("group_by")
    @classmethod
    def _groups(cls, values: list[str]) -> list[str]:
        for value in values:
            if value not in DIGEST_GROUPS and not (value.startswith("label:") and len(value) > 6):
                raise ValueError(f"cannot group by {value!r}: use {', '.join(DIGEST_GROUPS)} or label:NAME")
        return values

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_timezone(value)


class Action(Strict):
    channel: str = Field(min_length=1, max_length=100)
    template: str | None = Field(default=None, max_length=100)
    throttle: Duration | None = None
    dedup_window: Duration | None = None
    digest: str | None = Field(default=None, max_length=100)
    wait: Duration | None = Field(default=None, alias="for")
    approval: ApprovalSpec | None = None
    digest_options: DigestOptions | None = None
    target: str | None = Field(
        default=None, max_length=200, description="a person (person:NAME) or conversation within the channel"
    )

    @field_validator("digest")
    @classmethod
    def _digest_schedule(cls, value: str | None) -> str | None:
        if value is not None:
            cron_expression(value)
        return value

    @model_validator(mode="after")
    def _digest_consistent(self) -> Action:
        if self.digest is None and self.digest_options is not None:
            raise ValueError("digest_options needs digest (hourly, daily, weekly or a cron expression)")
        if self.digest is not None and self.wait is not None:
            raise ValueError("for cannot be combined with digest: a digest already waits for its window")
        if self.digest is not None and self.approval is not None:
            raise ValueError("approval cannot be combined with digest: an approval needs its own message")
        return self


class Rule(Strict):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")
    enabled: bool = True
    tenant: str = Field(default="*", min_length=1, max_length=100, description='a tenant, or "*" for every tenant')
    description: str = Field(default="", max_length=2000)
    match: Match = Field(default_factory=Match)
    actions: list[Action] = Field(default_factory=list, max_length=50)
    on_acknowledge: list[Action] = Field(default_factory=list)
    on_deny: list[Action] = Field(default_factory=list)
    on_escalate: list[Action] = Field(default_factory=list)
    on_expire: list[Action] = Field(default_factory=list)
    quiet_hours: QuietHoursList = Field(default_factory=list, description="windows in which this rule holds back")


ApprovalSpec.model_rebuild()


# ---------------------------------------------------------------- deliveries


class DeliveryStatus(StrEnum):
    pending = "pending"
    sending = "sending"
    sent = "sent"
    failed = "failed"  # failed an attempt, another one is scheduled
    dead = "dead"
    cancelled = "cancelled"


class DeliveryPurpose(StrEnum):
    notify = "notify"  # first message about an alert or approval
    update = "update"  # edit an earlier message (decision, resolve)
    callback = "callback"  # signed webhook to an approval's requester
    test = "test"
    digest = "digest"  # a coalesced window of alerts (content in Delivery.extra["digest"])
    report = "report"  # the scheduled report (content in Delivery.extra["report"])


class Delivery(BaseModel):
    id: str
    tenant: str
    event_id: str | None = None
    alert_id: str | None = None
    approval_id: str | None = None
    rule: str | None = None
    action_index: int | None = None
    channel: str
    purpose: DeliveryPurpose = DeliveryPurpose.notify
    idempotency_key: str
    status: DeliveryStatus
    attempts: int = 0
    next_attempt_at: UtcDatetime
    last_error: str | None = None
    message_ref: dict[str, Any] | None = None
    target: str | None = Field(default=None, description="a person or conversation within the channel")
    created_at: UtcDatetime
    updated_at: UtcDatetime
    sent_at: UtcDatetime | None = None


class DeliveryAttempt(BaseModel):
    delivery_id: str
    number: int
    started_at: UtcDatetime
    finished_at: UtcDatetime
    outcome: Literal["sent", "retry", "permanent"]
    status_code: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class HeldUpdate:
    """The update of a clicked message, queued already claimed by this process's outbox worker for the click's own
    answer to make (Slack's response_url replaces the clicked message): the surface settles it as sent once the
    platform took that answer, or hands it back to the outbox; if the process dies first, the claim's lease runs
    out and the outbox edits the message then."""

    delivery_id: str
    channel: str
    message_ref: dict[str, Any]
    created_at: datetime


# ---------------------------------------------------------------- people


class Identities(Strict):
    slack: str | None = Field(default=None, description="Slack user id, e.g. U012AB3CD")
    teams: str | None = Field(default=None, description="Azure AD object id")
    email: str | None = None


ALL_TENANTS = "*"
# Tenant names as events carry them, or "*" for every tenant.
TenantList = list[Annotated[str, Field(min_length=1, max_length=100)]]


class Person(Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")
    display_name: str = ""
    identities: Identities = Field(default_factory=Identities)
    quiet_hours: QuietHoursList = Field(default_factory=list, description="when deliveries to this person wait")
    tenants: TenantList = Field(
        default_factory=lambda: [ALL_TENANTS],
        description='the tenants whose alerts and approvals this person sees in chat; "*" for every tenant',
    )


class Group(Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")
    members: list[str] = Field(default_factory=list, description="person names or other group names")


class Actor(BaseModel):
    """Whoever clicked: the platform and the identity the platform vouched for."""

    platform: Literal["slack", "teams", "web", "api"]
    id: str
    display_name: str = ""


# ---------------------------------------------------------------- approvals


class ApprovalState(StrEnum):
    pending = "pending"
    acknowledged = "acknowledged"
    denied = "denied"
    escalated = "escalated"
    expired = "expired"
    cancelled = "cancelled"

    @property
    def final(self) -> bool:
        return self not in (ApprovalState.pending, ApprovalState.escalated)


class Choice(StrEnum):
    acknowledge = "acknowledge"
    deny = "deny"
    escalate = "escalate"


CHOICE_STATE: dict[Choice, ApprovalState] = {
    Choice.acknowledge: ApprovalState.acknowledged,
    Choice.deny: ApprovalState.denied,
    Choice.escalate: ApprovalState.escalated,
}


class Approval(BaseModel):
    """A question put to people, with its state and what it has been answered."""

    id: str
    tenant: str
    title: str
    summary: str = ""
    requester: str | None = None
    approvers: list[str] = Field(default_factory=list)
    targets: list[str] = Field(default_factory=list)
    choices: list[Choice] = Field(default_factory=lambda: list(Choice))
    state: ApprovalState = ApprovalState.pending
    quorum: int = 1
    allow_self_approval: bool = False
    escalation: list[EscalationStep] = Field(default_factory=list)
    escalation_level: int = 0
    callback_url: str | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    alert_id: str | None = None
    rule: str | None = None
    created_at: UtcDatetime
    expires_at: UtcDatetime
    decided_at: UtcDatetime | None = None
    decided_by: str | None = None
    decided_choice: Choice | None = None
    decision_channel: str | None = None


class Decision(BaseModel):
    """One person's answer to an approval, as recorded."""

    approval_id: str
    actor: str
    actor_platform: str
    choice: Choice
    channel: str | None = None
    decided_at: UtcDatetime
