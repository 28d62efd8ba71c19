"""What the Slack and Teams renderers share: wording, severity styling, facts, time and truncation.

Everything here is platform-neutral and pure. Escaping is not: each renderer escapes for its own markup.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from core.models.approvals import ApprovalState
from core.models.common import Severity
from core.models.deliveries import DeliveryPurpose
from core.models.events import AlertStatus, EventStatus, Scope

if TYPE_CHECKING:
    # Type-only: core.channels.base pulls in aiohttp, which a pure renderer has no business loading.
    from core.channels.base import Button, Notification

T = TypeVar("T")

ELLIPSIS = "…"

# ---------------------------------------------------------------- choices

CHOICE_LABELS: dict[str, str] = {"acknowledge": "Acknowledge", "deny": "Deny", "escalate": "Escalate"}

# Clicks that cannot be taken back: the renderers ask "are you sure?" where the platform can.
CONFIRM_CHOICES = frozenset({"deny", "escalate"})

# What the confirm dialog says, per choice: (title, question).
CONFIRM_WORDING: dict[str, tuple[str, str]] = {
    "acknowledge": ("Acknowledge?", "Acknowledge “{title}”?"),
    "deny": ("Deny?", "Deny “{title}”? This cannot be undone."),
    "escalate": ("Escalate?", "Escalate “{title}” to the next level of approvers?"),
}


def choice_label(button: Button) -> str:
    """The text on a choice button: the label the dispatcher chose, else our wording for the choice."""
    return button.label.strip() or CHOICE_LABELS.get(button.choice, button.choice.replace("_", " ").title())


def needs_confirm(button: Button) -> bool:
    """Whether a click on this button should be confirmed first."""
    return button.confirm or button.choice in CONFIRM_CHOICES


def unique_buttons(buttons: Iterable[Button]) -> list[Button]:
    """The buttons with one per choice: both platforms reject two actions with the same id."""
    seen: set[str] = set()
    out: list[Button] = []
    for button in buttons:
        if button.choice not in seen:
            seen.add(button.choice)
            out.append(button)
    return out


# ---------------------------------------------------------------- severity and outcome styling


@dataclass(frozen=True)
class Style:
    """How one severity or outcome looks on each platform."""

    label: str
    emoji: str
    hex: str  # Slack attachment colour bar
    container: str  # Adaptive Card ContainerStyle
    color: str  # Adaptive Card TextBlock color


SEVERITY_STYLES: dict[Severity, Style] = {
    Severity.critical: Style("Critical", "🔴", "#B3001B", "attention", "attention"),
    Severity.high: Style("High", "🟠", "#E8590C", "attention", "attention"),
    Severity.medium: Style("Medium", "🟡", "#F2C744", "warning", "warning"),
    Severity.low: Style("Low", "🔵", "#2F80ED", "accent", "accent"),
    Severity.info: Style("Info", "⚪", "#9AA0A6", "emphasis", "default"),
}

# An approval with no alert behind it has no severity: it gets a neutral "question" look.
APPROVAL_STYLE = Style("Approval", "🙋", "#5B5FC7", "accent", "accent")

# Notifications that carry neither alert nor approval (tests, plain notices).
NOTICE_STYLE = Style("Notice", "🔔", "#9AA0A6", "emphasis", "default")

OUTCOME_STYLES: dict[str, Style] = {
    "acknowledged": Style("Acknowledged", "✅", "#2EB67D", "good", "good"),
    "denied": Style("Denied", "⛔", "#B3001B", "attention", "attention"),
    "escalated": Style("Escalated", "⏫", "#E8590C", "warning", "warning"),
    "expired": Style("Expired", "⌛", "#9AA0A6", "emphasis", "default"),
    "cancelled": Style("Cancelled", "🚫", "#9AA0A6", "emphasis", "default"),
    "resolved": Style("Resolved", "✅", "#2EB67D", "good", "good"),
}

STATUS_EMOJI: dict[str, str] = {"firing": "🔥", "acknowledged": "👀", "resolved": "✅"}


def severity_of(note: Notification) -> Severity | None:
    """The severity a notification shows: its alert's, else its event's; approvals alone have none."""
    if note.alert is not None:
        return note.alert.severity
    if note.event is not None:
        return note.event.severity
    return None


def style_of(note: Notification) -> Style:
    """Colour and emoji for a live (undecided) notification."""
    severity = severity_of(note)
    if severity is not None:
        return SEVERITY_STYLES[severity]
    if note.approval is not None:
        return APPROVAL_STYLE
    return NOTICE_STYLE


def status_of(note: Notification) -> str | None:
    """firing / acknowledged / resolved, in the words on-call people use (an open alert is firing)."""
    if note.alert is not None:
        return {
            AlertStatus.open: "firing",
            AlertStatus.acknowledged: "acknowledged",
            AlertStatus.resolved: "resolved",
        }[note.alert.status]
    if note.event is not None:
        return "resolved" if note.event.status is EventStatus.resolved else "firing"
    return None


@dataclass(frozen=True)
class Outcome:
    """What became of an approval or alert: which outcome, who brought it about, and when."""

    key: str
    style: Style
    actor: str | None
    at: datetime | None


# What render_decided shows if asked about something nobody has decided yet (it must not fail).
PENDING_OUTCOME = Outcome("pending", Style("Pending", "⏳", APPROVAL_STYLE.hex, "accent", "accent"), None, None)


def outcome_sentence(outcome: Outcome, escape: Callable[[str], str], bold: Callable[[str], str]) -> str:
    """The outcome in words, e.g. "Denied by alice", with each platform's escaping and bold (time is separate)."""
    label = bold(outcome.style.label)
    if outcome.key == "expired":
        return f"{label}: nobody decided in time"
    if outcome.actor:
        return f"{label} by {escape(truncate(outcome.actor, 200))}"
    return label


def outcome_of(note: Notification) -> Outcome | None:
    """The decision a notification reports, or None while it is still open."""
    approval = note.approval
    if approval is not None:
        if approval.state is ApprovalState.pending:
            return None
        key = approval.state.value
        at = approval.decided_at
        if at is None and approval.state is ApprovalState.expired:
            at = approval.expires_at
        return Outcome(key, OUTCOME_STYLES[key], approval.decided_by, at)
    alert = note.alert
    if alert is not None:
        if alert.status is AlertStatus.acknowledged:
            return Outcome("acknowledged", OUTCOME_STYLES["acknowledged"], alert.acknowledged_by, alert.acknowledged_at)
        if alert.status is AlertStatus.resolved:
            return Outcome("resolved", OUTCOME_STYLES["resolved"], None, alert.resolved_at)
        return None
    if note.event is not None and note.event.status is EventStatus.resolved:
        return Outcome("resolved", OUTCOME_STYLES["resolved"], None, note.event.ts)
    return None


def view_of(note: Notification) -> str:
    """Which view render() shows: "decided", "approval" or "alert"."""
    approval = note.approval
    if approval is not None:
        # An escalated approval is still waiting for someone: it keeps its buttons.
        return "decided" if approval.state.final else "approval"
    if note.purpose is DeliveryPurpose.update and outcome_of(note) is not None:
        return "decided"
    return "alert"


# ---------------------------------------------------------------- facts


def scope_facts(scope: Scope) -> list[tuple[str, str]]:
    """Scope as (name, value) pairs: namespace, repo and digest first, then the labels sorted by name."""
    facts = [(name, value) for name, value in (("Namespace", scope.namespace), ("Repo", scope.repo)) if value]
    if scope.digest:
        facts.append(("Digest", scope.digest))
    facts.extend(sorted(scope.labels.items()))
    return facts


def stringify(value: Any) -> str:
    """A context value as text; structures as compact, key-sorted JSON so the output is deterministic."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return ", ".join(str(v) for v in value)
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False, separators=(",", ": "))


def context_facts(context: Mapping[str, Any]) -> list[tuple[str, str]]:
    """An approval's context as (name, value) pairs, in the order the requester gave them."""
    return [(str(key), stringify(value)) for key, value in context.items()]


# ---------------------------------------------------------------- time


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def aware(value: datetime) -> datetime:
    """The same instant, timezone-aware (naive values are UTC, as everywhere in ackbot)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def reference_time(note: Notification) -> datetime:
    """The "now" a card is rendered at: taken from the notification, never the wall clock, so output is stable."""
    for candidate in (
        note.created_at,
        note.approval.created_at if note.approval else None,
        note.alert.last_seen if note.alert else None,
        note.event.received_at if note.event else None,
    ):
        if candidate is not None:
            return aware(candidate)
    return EPOCH


def humanize(delta: timedelta) -> str:
    """A duration at the precision people read it with: "2d 3h", "1h 30m", "45m", "20s"."""
    seconds = max(0, int(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def time_left(expires_at: datetime, now: datetime) -> str:
    """How long is left, e.g. "expires in 45m" or "expired 5m ago", relative to the render time."""
    delta = aware(expires_at) - aware(now)
    if delta.total_seconds() > 0:
        return f"expires in {humanize(delta)}"
    return f"expired {humanize(-delta)} ago"


def plain_time(value: datetime) -> str:
    """A timestamp for places that cannot localise it: "2024-05-01 12:00 UTC"."""
    return aware(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def iso_time(value: datetime) -> str:
    """RFC 3339 in UTC with a Z, the only form Adaptive Card DATE()/TIME() accept."""
    return aware(value).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch_seconds(value: datetime) -> int:
    """Unix seconds, for Slack's <!date^...> token."""
    return int(aware(value).timestamp())


# ---------------------------------------------------------------- truncation


def and_more(count: int, noun: str = "") -> str:
    """The marker for left-out content, e.g. "… and 12 more" or "… and 12 more labels"."""
    return f"{ELLIPSIS} and {count} more" + (f" {noun}" if noun else "")


def truncate(text: str, limit: int) -> str:
    """Text cut to at most limit characters, ending in "…" when something was cut."""
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + ELLIPSIS


def take(items: Sequence[T], limit: int) -> tuple[list[T], int]:
    """The first limit items and how many were left out."""
    limit = max(0, limit)
    return list(items[:limit]), max(0, len(items) - limit)


@dataclass(frozen=True)
class Budget:
    """How much of each kind of content a card may carry; renderers try budgets from generous to tight."""

    text: int  # characters of free text (summary)
    facts: int  # number of facts / fields (scope, labels, context)
    value: int  # characters per fact value
    items: int  # rows of a list view
    links: int  # links shown


def fit(build: Callable[[Budget], T], size: Callable[[T], int], limit: int, ladder: Sequence[Budget]) -> T:
    """The first rendering, from generous to tight budgets, whose size is within limit; the tightest if none is."""
    result = build(ladder[0])
    for budget in ladder[1:]:
        if size(result) <= limit:
            return result
        result = build(budget)
    return result


def json_size(obj: Any) -> int:
    """Serialized size in bytes the way most HTTP clients send it (ASCII-escaped), the pessimistic count."""
    return len(json.dumps(obj))
