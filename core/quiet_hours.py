"""Quiet hours: recurring local-time windows in which notifications below a severity wait for the window's end.

Windows are written in local wall-clock time with an IANA timezone ("22:00-06:00", Europe/Berlin) and are
turned into UTC instants for each day, so a window keeps its local hours across daylight-saving changes: on the
night the clocks go forward it is an hour shorter in UTC, on the night they go back an hour longer. A local time
that does not exist (02:30 on the spring-forward night) is read with the offset before the change, as zoneinfo
does with fold=0.

Three layers apply to one delivery: the global windows (config `quiet_hours`), the rule's, and, when the action
targets a person (person:NAME), that person's. A delivery is held while any layer holds it, until the last of the
holding windows ends (windows that chain into each other are followed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

from core.models.common import Severity
from core.models.people import Person
from core.models.rules import Action, QuietHours, Rule

PERSON_PREFIX = "person:"
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Chained windows (e.g. a weekend window followed by a weeknight one) are followed at most this many times.
_MAX_CHAIN = 16


@dataclass(frozen=True)
class Layer:
    """The quiet windows of one source: "global", "rule NAME" or "person NAME"."""

    source: str
    windows: tuple[QuietHours, ...]


@dataclass(frozen=True)
class QuietHold:
    """Why and until when a delivery waits."""

    until: datetime
    release: Literal["end", "digest"]
    source: str
    window: QuietHours

    def describe(self) -> str:
        """One line for the dry run."""
        spec = self.window
        return (
            f"quiet hours {spec.window} {spec.timezone} ({self.source}) hold severities below {spec.min_severity.value}"
            f" until {self.until.isoformat()}; then {'one digest' if self.release == 'digest' else 'delivered'}"
        )


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _instant(day: date, minute: int, zone: ZoneInfo) -> datetime:
    # 24:00 is the next day's midnight; the wall-clock time is read in the zone, then made UTC.
    day += timedelta(days=minute // 1440)
    minute %= 1440
    local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=zone)
    return local.astimezone(UTC)


def occurrence(spec: QuietHours, now: datetime) -> tuple[datetime, datetime] | None:
    """The UTC (start, end) of the occurrence of the window that contains now, or None."""
    zone = _zone(spec.timezone)
    today = now.astimezone(zone).date()
    days = set(spec.days)
    crosses_midnight = spec.end_minute <= spec.start_minute
    # A window that crosses midnight and started yesterday may still be running.
    for offset in (-1, 0):
        day = today + timedelta(days=offset)
        if _WEEKDAYS[day.weekday()] not in days:
            continue
        start = _instant(day, spec.start_minute, zone)
        end = _instant(day + timedelta(days=1) if crosses_midnight else day, spec.end_minute, zone)
        if start <= now < end:
            return start, end
    return None


def _holds(spec: QuietHours, severity: Severity | None) -> bool:
    # No severity (a digest): held by every window that holds anything at all.
    if severity is None:
        return spec.min_severity.rank > Severity.info.rank
    return severity.rank < spec.min_severity.rank


def quiet_hold(*, now: datetime, severity: Severity | None, layers: Sequence[Layer]) -> QuietHold | None:
    """Whether a notification of this severity waits now, and until when (None: it goes out now)."""
    found: QuietHold | None = None
    moment = now
    for _ in range(_MAX_CHAIN):
        latest: QuietHold | None = None
        for layer in layers:
            for spec in layer.windows:
                if not _holds(spec, severity):
                    continue
                span = occurrence(spec, moment)
                if span is not None and (latest is None or span[1] > latest.until):
                    latest = QuietHold(until=span[1], release=spec.release, source=layer.source, window=spec)
        if latest is None:
            return found
        found = latest
        moment = latest.until
    return found


def person_name(target: str | None) -> str | None:
    """The person a delivery target names (person:NAME), if it names one."""
    if target and target.startswith(PERSON_PREFIX):
        return target.removeprefix(PERSON_PREFIX)
    return None


def layers_for(
    *, global_windows: Sequence[QuietHours], rule: Rule | None, action: Action | None, people: Mapping[str, Person]
) -> list[Layer]:
    """The quiet-hours layers that apply to one rule action: global, the rule's, the targeted person's."""
    layers = []
    if global_windows:
        layers.append(Layer("global", tuple(global_windows)))
    if rule is not None and rule.quiet_hours:
        layers.append(Layer(f"rule {rule.name}", tuple(rule.quiet_hours)))
    name = person_name(action.target if action is not None else None)
    person = people.get(name) if name else None
    if person is not None and person.quiet_hours:
        layers.append(Layer(f"person {person.name}", tuple(person.quiet_hours)))
    return layers
