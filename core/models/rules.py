"""Rules as written: what they match, and the actions they take (throttles, digests, approvals, quiet hours)."""

from __future__ import annotations

import re
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from croniter import croniter
from pydantic import BeforeValidator, Field, field_validator, model_validator

from core.models.common import Duration, Severity, Strict, check_timezone


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
