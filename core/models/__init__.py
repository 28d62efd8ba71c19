"""The domain vocabulary of ackbot: pydantic models shared by every layer, one module per job.

common       the strict base, severities, durations, UTC times, timezone names
events       events in and as stored, and the alerts they open
rules        rules, their matches and actions (throttles, digests, approvals, quiet hours)
deliveries   the outbox rows and their attempts
people       people, groups, and the actor a platform vouches for
approvals    approvals, their states and choices, and each answer

Import from the module that defines a name; this package still offers every name for code written before the
split (the approvals service and store, being rewritten, import from here).
"""

from __future__ import annotations

from core.models.approvals import CHOICE_STATE, Approval, ApprovalState, Choice, Decision
from core.models.common import (
    MAX_DURATION,
    Duration,
    Severity,
    Strict,
    UtcDatetime,
    check_timezone,
    format_duration,
    parse_duration,
    utcnow,
)
from core.models.deliveries import Delivery, DeliveryAttempt, DeliveryPurpose, DeliveryStatus, HeldUpdate
from core.models.events import Alert, AlertStatus, Event, EventIn, EventStatus, Link, Scope
from core.models.people import ALL_TENANTS, Actor, Group, Identities, Person, TenantList
from core.models.rules import (
    DIGEST_GROUPS,
    DIGEST_SCHEDULES,
    Action,
    ApprovalSpec,
    Condition,
    ConditionOp,
    DigestOptions,
    EscalationStep,
    Match,
    QuietHours,
    QuietHoursList,
    Rule,
    Weekday,
    cron_expression,
)

__all__ = [
    "ALL_TENANTS",
    "CHOICE_STATE",
    "DIGEST_GROUPS",
    "DIGEST_SCHEDULES",
    "MAX_DURATION",
    "Action",
    "Actor",
    "Alert",
    "AlertStatus",
    "Approval",
    "ApprovalSpec",
    "ApprovalState",
    "Choice",
    "Condition",
    "ConditionOp",
    "Decision",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryPurpose",
    "DeliveryStatus",
    "DigestOptions",
    "Duration",
    "EscalationStep",
    "Event",
    "EventIn",
    "EventStatus",
    "Group",
    "HeldUpdate",
    "Identities",
    "Link",
    "Match",
    "Person",
    "QuietHours",
    "QuietHoursList",
    "Rule",
    "Scope",
    "Severity",
    "Strict",
    "TenantList",
    "UtcDatetime",
    "Weekday",
    "check_timezone",
    "cron_expression",
    "format_duration",
    "parse_duration",
    "utcnow",
]
