"""What every model is made of: the strict base, severities, durations, UTC times, timezone names."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, PlainSerializer

from core import json_input


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


def check_timezone(name: str) -> str:
    """An IANA timezone name that zoneinfo knows (Europe/Berlin, UTC ...)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r}: use an IANA name such as Europe/Berlin or UTC") from None
    return name


def _bounded_document(value: dict[str, Any]) -> dict[str, Any]:
    try:
        json_input.check_value(value)
    except json_input.JsonRefused as exc:
        # The inner path: pydantic puts the field's own name in front of it.
        raise ValueError(f"{exc.field}: {exc.message}" if exc.field != "(body)" else exc.message) from None
    return value


# Free-form JSON a client sends (an event's payload, an approval's context): the nesting limit and finite numbers
# of every JSON body hold inside it too, however it arrived (a body, a source's webhook, the Python API).
FreeJson = Annotated[dict[str, Any], AfterValidator(_bounded_document)]
