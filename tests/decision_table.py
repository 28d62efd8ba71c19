"""The decision table of approvals: scenarios built combinatorially, each run on a fresh database, normalized.

Every scenario opens one approval (through the API, or through a rule action at ingest), brings it to an initial
state with the service's own public calls (votes, an escalation or expiry by the scheduler, a decision, a cancel),
mints the token its click carries, then makes ONE call (`decide`, `decide_by_id`, `cancel` or the scheduler's
`run_once`) and records what that call answered and what it wrote: the differences between snapshots of the
tables taken just before and just after it. Ids become labels (`apr#1`, `dlv#3`) in order of appearance, times
become offsets in seconds from the scenario's start, and hashes, nonces, key ids and worker ids become whether
they are there. What comes out is the same on every run and on both stores, so it is kept as golden JSON files
(tests/golden/decisions) that tests/test_decision_table.py compares against.

Only stable interfaces are used: the runtime as bot.app.build_runtime makes it, the public methods of
ApprovalService, the token codec, the runtime's ingest queue, and plain SQLAlchemy on core/store/tables.py.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import select, update

from bot.app import build_runtime
from core.approvals import ApprovalService
from core.approvals.models import ApprovalRequest, DecisionResult
from core.channels.base import BaseChannel, Notification, SendResult
from core.clock import ManualClock
from core.models.events import EventIn
from core.models.people import Actor
from core.runtime import Runtime
from core.store.tables import (
    AlertRow,
    ApprovalRow,
    ApprovalVoteRow,
    AuditRow,
    DeliveryRow,
    SpentNonceRow,
    table_of,
)
from tests.conftest import make_config

GOLDEN_DIR = Path(__file__).parent / "golden" / "decisions"

# ---------------------------------------------------------------- the world every scenario runs in

PEOPLE = [
    {
        "name": "alice",
        "display_name": "Alice Example",
        "identities": {"slack": "U0ALICE", "email": "alice@example.com"},
    },
    {"name": "bob", "identities": {"slack": "U0BOB", "teams": "8f0c1a2b-0000-4000-8000-00000000b0b0"}},
    {"name": "carol", "identities": {"email": "carol@example.com"}},
    {"name": "dave", "identities": {"slack": "U0DAVE"}},
    {"name": "erin", "identities": {"slack": "U0ERIN"}},
]
GROUPS = [
    {"name": "oncall", "members": ["alice", "bob"]},
    {"name": "leads", "members": ["carol", "managers"]},
    {"name": "managers", "members": ["erin"]},
]
CHANNELS = [
    {"name": "console", "type": "console"},
    {"name": "chat", "type": "slack"},
    {"name": "mail", "type": "email"},
]
# Two steps at most: the first widens the approvers to leads (carol, erin) and messages carol; the second adds dave.
STEPS = [
    {"after": "10m", "targets": ["person:carol"], "approvers": ["leads"]},
    {"after": "20m", "targets": ["console"], "approvers": ["dave"]},
]
STEP_AT = [timedelta(minutes=10), timedelta(minutes=20), timedelta(minutes=30)]
TIMEOUT = timedelta(hours=1)
CALLBACK_URL = "https://ci.example/approvals/callback"
# The API-created approval's messages: the chat channel itself, and bob in person on chat (a person target).
API_TARGETS = ["chat", "person:bob/chat"]
# What a shown message's reference is (the channel's own id of the post); the i-th message's.
MESSAGE_REFS = [{"channel": "C0CHAT", "ts": "1767614400.000100"}, {"channel": "D0BOB", "ts": "1767614400.000200"}]
ELSEWHERE_REF = {"channel": "C0ELSEWHERE", "ts": "1767614400.999900"}
SHORT_TOKEN_TTL = 60  # seconds: the "expired" token fault, with the clock moved past it
OTHER_TENANT = "globex"

ALICE = Actor(platform="slack", id="U0ALICE")
BOB = Actor(platform="slack", id="U0BOB")
BOB_TEAMS = Actor(platform="teams", id="8f0c1a2b-0000-4000-8000-00000000b0b0")
DAVE = Actor(platform="slack", id="U0DAVE")
ERIN = Actor(platform="slack", id="U0ERIN")
NOBODY = Actor(platform="slack", id="U0NOBODY")


def rule_for(scenario: Scenario) -> dict[str, Any]:
    """The rule whose action opens the approval of a rule-opened scenario, with every follow-up hook set."""
    return {
        "name": "deploys",
        "match": {"kinds": ["deploy.*"]},
        "actions": [
            {
                "channel": "chat",
                "approval": {
                    "approvers": ["oncall"],
                    "timeout": "1h",
                    "quorum": scenario.quorum,
                    "escalation": STEPS[: scenario.steps],
                },
            }
        ],
        "on_acknowledge": [{"channel": "console"}],
        "on_deny": [{"channel": "mail"}],
        "on_escalate": [{"channel": "console"}],
        "on_expire": [{"channel": "console"}, {"channel": "mail"}],
    }


def recording_channel(type_name: str) -> type[BaseChannel]:
    """A stand-in channel class of a real type name (nothing is dispatched in a scenario; it only has to build)."""

    class Recording(BaseChannel):
        type: ClassVar[str] = type_name
        supports_update: ClassVar[bool] = True

        async def send(self, note: Notification) -> SendResult:
            return SendResult(message_ref={"message": note.delivery_id})

        async def update(self, message_ref: Mapping[str, Any], note: Notification) -> SendResult:
            return SendResult(message_ref=dict(message_ref))

    return Recording


# ---------------------------------------------------------------- scenarios

PATHS = ("decide", "decide_by_id", "cancel", "tick_escalate", "tick_expire")
INITIAL = ("pending", "escalated", "acknowledged", "denied", "expired", "cancelled", "overdue")
FAULTS = (
    "none",
    "expired",  # minted with a 60 s ttl, the clock moved past it
    "wrong_tenant",  # minted for another tenant
    "bad_signature",  # one character of the MAC changed
    "replayed",  # its nonce is already in spent_nonces
    "reused",  # bob's earlier vote was cast with this very token
    "wrong_platform",  # a Slack message's button clicked by bob from Teams
    "foreign_channel",  # bound to the mail channel, clicked in Slack
    "web_no_subject",  # a web click on a link not sent to a person
    "wrong_subject",  # bob's personal link, clicked by alice
)
ACTORS = (
    "approver",  # alice on Slack
    "non_approver",  # dave
    "unknown",  # a Slack user ackbot does not know
    "requester",  # alice, who asked for it (allow_self_approval false)
    "requester_allowed",  # alice, who asked for it (allow_self_approval true)
    "tenant_mismatch",  # alice, through a surface that says the tenant is globex
    "web_subject",  # bob on the web page, with the link sent to him
    "escalation_approver",  # erin: in leads (through managers), an approver from the first step on
)


@dataclass(frozen=True)
class Scenario:
    """One row of the decision table: the machine's input, as a flat description."""

    path: str = "decide"
    initial: str = "pending"
    creation: str = "api"  # api (audited at once) | rule (opened at ingest, its creation audited later)
    steps: int = 1  # escalation steps configured (0, 1, 2)
    quorum: int = 1
    prior_vote: str = "none"  # none | other (bob acknowledged first) | same (alice did)
    choice: str | None = "acknowledge"
    fault: str = "none"
    actor: str = "approver"
    answering: str = "none"  # none | clicked (the clicked message's reference) | elsewhere (not one of its messages)
    callback: bool = False
    shown: int = 1  # how many of the approval's messages were sent (the channel's, then the person's)

    @property
    def level(self) -> int:
        """The escalation level of the initial state."""
        return 1 if self.initial == "escalated" else 0

    @property
    def steps_left(self) -> int:
        return max(0, self.steps - self.level)

    @property
    def name(self) -> str:
        parts = [self.path, self.initial]
        if self.path in ("decide", "decide_by_id") and self.choice:
            parts.append({"acknowledge": "ack", "deny": "deny", "escalate": "esc"}.get(self.choice, self.choice))
        defaults = Scenario()
        if self.creation != defaults.creation:
            parts.append(self.creation)
        if self.steps != defaults.steps:
            parts.append(f"steps{self.steps}")
        if self.quorum != defaults.quorum:
            parts.append(f"q{self.quorum}")
        if self.prior_vote != defaults.prior_vote:
            parts.append(f"vote_{self.prior_vote}")
        if self.fault != defaults.fault:
            parts.append(f"fault_{self.fault}")
        if self.actor != defaults.actor:
            parts.append(f"by_{self.actor}")
        if self.answering != defaults.answering:
            parts.append(f"answer_{self.answering}")
        if self.callback:
            parts.append("callback")
        if self.shown != defaults.shown:
            parts.append(f"shown{self.shown}")
        return "-".join(parts)

    def setup(self) -> dict[str, Any]:
        """The flat description recorded in the golden file."""
        return {**asdict(self), "level": self.level, "steps_left": self.steps_left}

    def check(self) -> None:
        """Refuse combinations that mean nothing (the builder must not make them)."""
        assert self.path in PATHS and self.initial in INITIAL, self
        assert self.fault in FAULTS and self.actor in ACTORS, self
        assert self.creation in ("api", "rule") and 0 <= self.steps <= 2 and self.quorum in (1, 2), self
        assert self.prior_vote in ("none", "other", "same") and self.answering in ("none", "clicked", "elsewhere")
        assert 0 <= self.shown <= 2, self
        if self.initial == "escalated":
            assert self.steps >= 1, self
        if self.prior_vote != "none":
            assert self.quorum == 2 and self.initial in ("pending", "escalated", "overdue"), self
        if self.initial in ("acknowledged", "denied", "expired", "cancelled"):
            assert self.quorum == 1, self
        if self.creation == "rule":
            assert not self.callback and self.shown <= 1, self
            assert self.actor not in ("requester", "requester_allowed", "web_subject"), self
        if self.path == "decide":
            assert self.choice in ("acknowledge", "deny", "escalate"), self
        else:
            assert self.fault == "none" and self.answering == "none", self
        if self.path == "decide_by_id":
            assert self.choice in ("acknowledge", "deny", "escalate") and self.actor != "web_subject", self
        if self.path in ("cancel", "tick_escalate", "tick_expire"):
            assert self.choice is None, self
            assert self.actor == "approver" or (self.path == "cancel" and self.actor == "tenant_mismatch"), self
        if self.fault == "reused":
            assert self.prior_vote == "other" and self.choice == "acknowledge", self
        if self.fault in ("wrong_platform", "web_no_subject", "wrong_subject"):
            assert self.actor == "approver", self
        if self.fault in ("wrong_subject",) or self.actor == "web_subject":
            assert self.creation == "api" and self.shown >= 1, self


def grid(base: Scenario | None = None, **axes: Sequence[Any]) -> list[Scenario]:
    """Every combination of the axes' values, on top of base (the defaults)."""
    base = base or Scenario()
    names = list(axes)
    return [replace(base, **dict(zip(names, values, strict=True))) for values in itertools.product(*axes.values())]


def build_scenarios() -> dict[str, Scenario]:
    """The table: a few small grids, each crossing the dimensions that interact."""
    tick = Scenario(choice=None)
    cancel = Scenario(path="cancel", choice=None)
    rows: list[Scenario] = [
        # Clicks that count, on an open approval: state x steps (left or not) x choice, then quorum and votes.
        *grid(initial=["pending"], choice=["acknowledge", "deny", "escalate"]),
        *grid(initial=["pending"], steps=[0], choice=["escalate"]),
        *grid(initial=["escalated"], steps=[1, 2], choice=["acknowledge", "escalate"]),
        *grid(initial=["escalated"], steps=[1], choice=["deny"]),
        *grid(quorum=[2], choice=["acknowledge"]),
        *grid(quorum=[2], prior_vote=["other"], choice=["acknowledge", "deny", "escalate"]),
        *grid(initial=["escalated"], steps=[2], quorum=[2], prior_vote=["other"], choice=["acknowledge"]),
        # The same person twice, by click and by command; a deny after one's own acknowledgement.
        *grid(quorum=[2], prior_vote=["same"], choice=["acknowledge", "deny"]),
        *grid(quorum=[2], prior_vote=["same"], path=["decide_by_id"], choice=["acknowledge"]),
        # The same through a command.
        *grid(path=["decide_by_id"], choice=["acknowledge", "deny", "escalate"]),
        *grid(path=["decide_by_id"], quorum=[2], prior_vote=["other"], choice=["acknowledge"]),
        # Closed already (or past its expiry, not yet ticked): by click, and by command.
        *grid(initial=["acknowledged", "denied", "expired", "cancelled", "overdue"], choice=["acknowledge"]),
        *grid(path=["decide_by_id"], initial=["acknowledged", "expired", "overdue"], choice=["acknowledge"]),
        # Token faults on an open approval, and which check wins against a closed (or overdue) one.
        *grid(fault=[f for f in FAULTS if f not in ("none", "reused")]),
        *grid(fault=["reused"], quorum=[2], prior_vote=["other"]),
        *grid(
            fault=["expired", "wrong_tenant", "replayed", "wrong_platform", "web_no_subject"], initial=["acknowledged"]
        ),
        *grid(fault=["expired"], initial=["expired", "overdue"]),
        *grid(fault=["web_no_subject"], initial=["overdue"]),
        *grid(fault=["bad_signature"], choice=["deny"], answering=["clicked"]),
        # Who clicks: by click and by command.
        *grid(actor=["non_approver", "unknown", "requester", "requester_allowed", "tenant_mismatch"]),
        *grid(path=["decide_by_id"], actor=["non_approver", "unknown", "requester", "tenant_mismatch"]),
        *grid(actor=["requester"], choice=["deny"]),
        *grid(actor=["web_subject"], choice=["acknowledge", "deny"]),
        *grid(actor=["escalation_approver"], initial=["pending", "escalated"]),
        *grid(actor=["non_approver"], choice=["escalate"]),
        # The clicked message's update, held for the click's own answer (or not).
        *grid(answering=["clicked"], choice=["acknowledge", "deny", "escalate"]),
        *grid(answering=["clicked"], quorum=[2], prior_vote=["none", "other"]),
        *grid(answering=["clicked"], shown=[0, 2]),
        *grid(answering=["elsewhere"]),
        *grid(answering=["clicked"], creation=["rule"]),
        *grid(answering=["clicked"], actor=["web_subject"], shown=[2]),
        # What a final decision queues: callback x shown messages.
        *grid(callback=[False, True], shown=[0, 2], choice=["acknowledge"]),
        *grid(callback=[True], choice=["deny", "escalate"]),
        # Opened by a rule: the creation is audited by the first change (a refusal too), and the rule's follow-ups.
        *grid(creation=["rule"], choice=["acknowledge", "deny", "escalate"]),
        *grid(creation=["rule"], shown=[0], choice=["acknowledge"]),
        *grid(creation=["rule"], quorum=[2], prior_vote=["other"]),
        *grid(creation=["rule"], path=["decide_by_id"]),
        *grid(creation=["rule"], initial=["escalated"], steps=[2], choice=["escalate"]),
        *grid(creation=["rule"], actor=["non_approver"]),
        *grid(creation=["rule"], fault=["expired", "bad_signature"]),
        # Cancelled: every initial state, the surface's tenant, what it queues.
        *grid(cancel, initial=["pending", "escalated", "acknowledged", "expired", "cancelled", "overdue"]),
        *grid(cancel, actor=["tenant_mismatch"]),
        *grid(cancel, callback=[True], shown=[2]),
        *grid(cancel, creation=["rule"]),
        # The scheduler: at the escalation step's time and at the expiry.
        *grid(tick, path=["tick_escalate"], initial=["pending"], steps=[0, 1]),
        *grid(tick, path=["tick_escalate"], initial=["escalated"], steps=[1, 2]),
        *grid(tick, path=["tick_escalate"], creation=["rule"]),
        *grid(tick, path=["tick_escalate"], quorum=[2], prior_vote=["other"], shown=[2]),
        *grid(tick, path=["tick_escalate"], initial=["acknowledged"]),
        *grid(tick, path=["tick_expire"], initial=["pending", "escalated", "overdue", "cancelled"]),
        *grid(tick, path=["tick_expire"], quorum=[2], prior_vote=["other"]),
        *grid(tick, path=["tick_expire"], callback=[True], shown=[2]),
        *grid(tick, path=["tick_expire"], creation=["rule"]),
    ]
    table: dict[str, Scenario] = {}
    for scenario in rows:
        scenario.check()
        table.setdefault(scenario.name, scenario)
    return table


SCENARIOS = build_scenarios()

# ---------------------------------------------------------------- normalizing

_ID = re.compile(r"\b(apr|dlv|alr|evt)_[0-9a-f]{28}\b")
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$")
# Values that differ on every run whatever the behaviour: recorded as whether they are there.
_PRESENCE_KEYS = frozenset({"nonce_hash", "nonce", "kid", "hash", "prev_hash", "signature", "idempotency_key"})
APPROVAL_COLUMNS = (
    "state",
    "decided_at",
    "decided_by",
    "decided_choice",
    "decision_channel",
    "escalation_level",
    "approvers",
    "targets",
    "next_due_at",
    "created_audited",
)


class Normalizer:
    """Ids to labels in order of appearance, times to offsets from the start, secrets to their presence."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self.labels: dict[str, str] = {}
        self._counts: dict[str, int] = {}

    def label(self, raw: str | None) -> str | None:
        if raw is None:
            return None
        if raw not in self.labels:
            kind = raw.split("_", 1)[0]
            self._counts[kind] = self._counts.get(kind, 0) + 1
            self.labels[raw] = f"{kind}#{self._counts[kind]}"
        return self.labels[raw]

    def time(self, moment: datetime | None) -> int | float | None:
        if moment is None:
            return None
        offset = (moment - self.start).total_seconds()
        return int(offset) if offset == int(offset) else offset

    def text(self, value: str) -> Any:
        if _ISO.match(value):
            return self.time(datetime.fromisoformat(value.replace("Z", "+00:00")))
        return _ID.sub(lambda match: self.label(match.group(0)) or "", value)

    def value(self, value: Any) -> Any:
        if isinstance(value, datetime):
            return self.time(value)
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {
                str(key): (item is not None if key in _PRESENCE_KEYS else self.value(item))
                for key, item in sorted(value.items())
            }
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        if hasattr(value, "value") and isinstance(value.value, str):  # an enum
            return value.value
        return value


# ---------------------------------------------------------------- snapshots


@dataclass
class Snapshot:
    approval: dict[str, Any]
    votes: list[dict[str, Any]]
    nonces: set[str]
    deliveries: dict[str, dict[str, Any]]
    audit: list[dict[str, Any]]
    alert: dict[str, Any] | None


async def snapshot(runtime: Runtime, approval_id: str, alert_id: str | None) -> Snapshot:
    """The rows a decision may touch, as plain dicts (whatever columns the tables have besides)."""
    approvals, votes, nonces = table_of(ApprovalRow), table_of(ApprovalVoteRow), table_of(SpentNonceRow)
    deliveries, audit, alerts = table_of(DeliveryRow), table_of(AuditRow), table_of(AlertRow)
    async with runtime.db.read() as session:
        approval = (await session.execute(select(approvals).where(approvals.c.id == approval_id))).one()._asdict()
        vote_rows = await session.execute(select(votes).where(votes.c.approval_id == approval_id).order_by(votes.c.id))
        nonce_rows = await session.execute(select(nonces.c.nonce))
        delivery_rows = await session.execute(select(deliveries))
        audit_rows = await session.execute(select(audit).order_by(audit.c.seq))
        alert = None
        if alert_id is not None:
            alert = (await session.execute(select(alerts).where(alerts.c.id == alert_id))).one()._asdict()
        return Snapshot(
            approval=approval,
            votes=[row._asdict() for row in vote_rows],
            nonces={row.nonce for row in nonce_rows},
            deliveries={row.id: row._asdict() for row in delivery_rows},
            audit=[row._asdict() for row in audit_rows],
            alert=alert,
        )


def _delivery_order(row: Mapping[str, Any], norm: Normalizer) -> str:
    # Ids are random: order by what a delivery is (its time, purpose, channel, target, action, extra).
    return json.dumps(
        [
            norm.time(row["created_at"]),
            row["purpose"],
            row["channel"],
            row["target"] or "",
            row["action_index"] if row["action_index"] is not None else -1,
            norm.value(_strip_ids(row["extra"])),
        ],
        sort_keys=True,
    )


def _strip_ids(value: Any) -> Any:
    if isinstance(value, str):
        return _ID.sub("ID", value)
    if isinstance(value, Mapping):
        return {key: _strip_ids(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_strip_ids(item) for item in value]
    return value


def label_deliveries(rows: Sequence[Mapping[str, Any]], norm: Normalizer) -> list[Mapping[str, Any]]:
    """Label deliveries in the order of what they are; returns them in that order."""
    ordered = sorted(rows, key=lambda row: _delivery_order(row, norm))
    for row in ordered:
        norm.label(row["id"])
    return ordered


def delivery_document(row: Mapping[str, Any], norm: Normalizer) -> dict[str, Any]:
    return {
        "id": norm.label(row["id"]),
        "purpose": row["purpose"],
        "channel": row["channel"],
        "target": row["target"],
        "status": row["status"],
        "claimed": row["claimed_by"] is not None,
        "leased": row["lease_until"] is not None,
        "extra": norm.value(row["extra"]),
        "message_ref": norm.value(row["message_ref"]),
        "idempotency_key": bool(row["idempotency_key"]),
        "rule": row["rule"],
        "action_index": row["action_index"],
        "approval": norm.label(row["approval_id"]),
        "alert": norm.label(row["alert_id"]),
        "event": norm.label(row["event_id"]),
    }


def approval_document(values: Mapping[str, Any], norm: Normalizer) -> dict[str, Any]:
    return {key: norm.value(values[key]) for key in APPROVAL_COLUMNS if key in values}


def writes(before: Snapshot, after: Snapshot, norm: Normalizer) -> dict[str, Any]:
    """What the call wrote: the differences between the snapshots."""
    changed = {
        key: {"from": norm.value(before.approval[key]), "to": norm.value(after.approval[key])}
        for key in APPROVAL_COLUMNS
        if norm.value(before.approval[key]) != norm.value(after.approval[key])
    }
    seen_votes = {vote["id"] for vote in before.votes}
    votes = [
        {
            "person": vote["person"],
            "choice": vote["choice"],
            "actor_platform": vote["actor_platform"],
            "actor_id": vote["actor_id"],
            "channel": vote["channel"],
            "at": norm.time(vote["created_at"]),
        }
        for vote in after.votes
        if vote["id"] not in seen_votes
    ]
    added = [row for key, row in after.deliveries.items() if key not in before.deliveries]
    deliveries = [delivery_document(row, norm) for row in label_deliveries(added, norm)]
    altered: dict[str, Any] = {}
    for key, old in before.deliveries.items():
        new = after.deliveries.get(key)
        if new is None:
            altered[norm.label(key) or key] = "deleted"
            continue
        old_doc, new_doc = delivery_document(old, norm), delivery_document(new, norm)
        diff = {f: {"from": old_doc[f], "to": new_doc[f]} for f in old_doc if old_doc[f] != new_doc[f]}
        if diff:
            altered[norm.label(key) or key] = diff
    last_seq = max((row["seq"] for row in before.audit), default=0)
    audit = [
        {
            "type": row["type"],
            "actor": norm.value(row["actor"]),
            "actor_platform": row["actor_platform"],
            "tenant": row["tenant"],
            "approval": norm.label(row["approval_id"]),
            "alert": norm.label(row["alert_id"]),
            "at": norm.time(row["at"]),
            "data": norm.value(row["data"]),
        }
        for row in after.audit
        if row["seq"] > last_seq
    ]
    alert: dict[str, Any] | None = None
    if before.alert is not None and after.alert is not None:
        keys = ("status", "acknowledged_by", "acknowledged_at")
        alert = {
            "acknowledged": before.alert["status"] != "acknowledged" and after.alert["status"] == "acknowledged",
            "changes": {
                key: {"from": norm.value(before.alert[key]), "to": norm.value(after.alert[key])}
                for key in keys
                if before.alert[key] != after.alert[key]
            },
        }
    return {
        "approval": changed,
        "votes": votes,
        "nonces_spent": len(after.nonces - before.nonces),
        "nonces_pruned": len(before.nonces - after.nonces),
        "deliveries": deliveries,
        "deliveries_changed": altered,
        "audit": audit,
        "alert": alert,
    }


def answer_document(result: DecisionResult, norm: Normalizer) -> dict[str, Any]:
    held = result.held_update
    return {
        "ok": result.ok,
        "reason": result.reason.value,
        "message": norm.text(result.message),
        "http_status": result.http_status,
        "choice": result.choice.value if result.choice else None,
        "person": result.person,
        "votes": result.votes,
        "quorum": result.quorum,
        "approval": approval_document(result.approval.model_dump(), norm) if result.approval else None,
        "held": None
        if held is None
        else {
            "channel": held.channel,
            "delivery": norm.label(held.delivery_id),
            "message_ref": norm.value(dict(held.message_ref)),
        },
    }


# ---------------------------------------------------------------- running one scenario


def _tampered(token: str) -> str:
    """The token with one character of its signature changed."""
    payload, mac = token.rsplit(".", 1)
    middle = len(mac) // 2
    swapped = "A" if mac[middle] != "A" else "B"
    return f"{payload}.{mac[:middle]}{swapped}{mac[middle + 1 :]}"


class _Run:
    def __init__(self, runtime: Runtime, clock: ManualClock, scenario: Scenario) -> None:
        self.runtime = runtime
        self.clock = clock
        self.scenario = scenario
        self.start = clock.now()
        self.approval_id = ""
        self.alert_id: str | None = None
        self.messages: list[dict[str, Any]] = []

    @property
    def approvals(self) -> ApprovalService:
        return self.runtime.approvals

    async def open(self) -> None:
        s = self.scenario
        if s.creation == "api":
            requester = "alice" if s.actor in ("requester", "requester_allowed") else None
            request = ApprovalRequest.model_validate(
                {
                    "title": "Deploy api 1.4 to prod?",
                    "approvers": ["oncall"],
                    "targets": API_TARGETS,
                    "quorum": s.quorum,
                    "escalation": STEPS[: s.steps],
                    "requester": requester,
                    "allow_self_approval": s.actor == "requester_allowed",
                    "callback_url": CALLBACK_URL if s.callback else None,
                    "timeout": "1h",
                }
            )
            approval = await self.approvals.create(request=request, tenant="acme", created_by="acme")
            self.approval_id = approval.id
        else:
            event = EventIn(kind="deploy.requested", tenant="acme", title="Deploy api 1.4", severity="high")
            (ingested,) = await self.runtime.intake.submit(events=[event], tenants=["acme"], source="api")
            self.alert_id = ingested.alert_id
            async with self.runtime.db.read() as session:
                (self.approval_id,) = (await session.execute(select(ApprovalRow.id))).scalars().all()
        deliveries = table_of(DeliveryRow)
        async with self.runtime.db.read() as session:
            rows = await session.execute(
                select(deliveries).where(deliveries.c.approval_id == self.approval_id, deliveries.c.purpose == "notify")
            )
            found = {(row.channel, row.target): row._asdict() for row in rows}
        order = [("chat", None), ("chat", "U0BOB")] if s.creation == "api" else [("chat", None)]
        assert sorted(found, key=str) == sorted(order, key=str), found
        self.messages = [found[key] for key in order]

    async def show(self) -> None:
        """Mark the first `shown` messages sent, each with its message reference."""
        deliveries = table_of(DeliveryRow)
        async with self.runtime.db.transaction() as session:
            for index, message in enumerate(self.messages[: self.scenario.shown]):
                await session.execute(
                    update(deliveries)
                    .where(deliveries.c.id == message["id"])
                    .values(status="sent", message_ref=MESSAGE_REFS[index], sent_at=self.start, attempts=1)
                )

    def mint(self) -> tuple[str, int]:
        """The token the click carries (minted at the start, as its message went out) and that message's index."""
        s = self.scenario
        index = 1 if s.fault == "wrong_subject" or s.actor == "web_subject" else 0
        message = self.messages[index]
        subject = (message["extra"] or {}).get("person")
        codec = self.approvals.keys.codec
        token = codec.issue(
            tenant=OTHER_TENANT if s.fault == "wrong_tenant" else "acme",
            approval_id=self.approval_id,
            channel="mail" if s.fault == "foreign_channel" else message["channel"],
            choice=s.choice or "acknowledge",
            delivery_id=message["id"],
            subject=subject,
            ttl=SHORT_TOKEN_TTL if s.fault == "expired" else None,
            now=int(self.start.timestamp()),
        )
        return token, index

    def actor(self) -> Actor:
        s = self.scenario
        if s.fault == "wrong_platform":
            return BOB_TEAMS
        if s.fault == "web_no_subject":
            return Actor(platform="web", id="alice")
        return {
            "non_approver": DAVE,
            "unknown": NOBODY,
            "web_subject": Actor(platform="web", id="bob"),
            "escalation_approver": ERIN,
        }.get(s.actor, ALICE)

    def expect(self, result: DecisionResult, reason: str) -> None:
        assert result.reason.value == reason, f"setup of {self.scenario.name}: {result.reason.value} ({result.message})"

    async def prepare(self, token: str) -> None:
        """Bring the approval to the scenario's initial state (votes first, then the state)."""
        s = self.scenario
        if s.prior_vote != "none":
            voter = BOB if s.prior_vote == "other" else ALICE
            if s.fault == "reused":
                first = await self.approvals.decide(token=token, actor=voter)
            else:
                first = await self.approvals.decide_by_id(
                    approval_id=self.approval_id, choice="acknowledge", actor=voter
                )
            self.expect(first, "vote_recorded")
        if s.initial == "escalated":
            self.clock.set(self.start + STEP_AT[0])
            assert await self.approvals.run_once() == 1
        elif s.initial in ("acknowledged", "denied"):
            choice = "acknowledge" if s.initial == "acknowledged" else "deny"
            decided = await self.approvals.decide_by_id(approval_id=self.approval_id, choice=choice, actor=BOB)
            self.expect(decided, "decided")
        elif s.initial == "cancelled":
            self.expect(await self.approvals.cancel(approval_id=self.approval_id, by="acme"), "cancelled")
        elif s.initial == "expired":
            self.clock.set(self.start + TIMEOUT)
            assert await self.approvals.run_once() == 1
        elif s.initial == "overdue":
            self.clock.set(self.start + TIMEOUT)
        if s.fault == "replayed":
            claims = self.approvals.keys.codec.verify(token, now=int(self.start.timestamp()))
            async with self.runtime.db.transaction() as session:
                session.add(
                    SpentNonceRow(
                        nonce=claims.nonce,
                        approval_id=self.approval_id,
                        spent_at=self.start,
                        expires_at=claims.expires_at,
                    )
                )
        if s.fault == "expired":
            self.clock.advance(timedelta(seconds=2 * SHORT_TOKEN_TTL))

    async def act(self, token: str, index: int) -> tuple[DecisionResult | None, int | None]:
        s = self.scenario
        tenant = OTHER_TENANT if s.actor == "tenant_mismatch" else None
        if s.path == "decide":
            token = _tampered(token) if s.fault == "bad_signature" else token
            answering = {"clicked": MESSAGE_REFS[index], "elsewhere": ELSEWHERE_REF}.get(s.answering)
            result = await self.approvals.decide(token=token, actor=self.actor(), tenant=tenant, answering=answering)
            return result, None
        if s.path == "decide_by_id":
            result = await self.approvals.decide_by_id(
                approval_id=self.approval_id, choice=s.choice or "", actor=self.actor(), tenant=tenant
            )
            return result, None
        if s.path == "cancel":
            return await self.approvals.cancel(approval_id=self.approval_id, by="acme", tenant=tenant), None
        due = STEP_AT[s.level] if s.path == "tick_escalate" else TIMEOUT
        self.clock.set(max(self.clock.now(), self.start + due))
        return None, int(await self.approvals.run_once())


async def run_scenario(database_url: str, scenario: Scenario) -> dict[str, Any]:
    """Run one scenario on a fresh database; the golden document (setup, result, writes)."""
    clock = ManualClock()
    overrides: dict[str, Any] = {"people": PEOPLE, "groups": GROUPS, "channels": CHANNELS}
    if scenario.creation == "rule":
        overrides["rules"] = [rule_for(scenario)]
    runtime = build_runtime(make_config(database_url, **overrides), clock=clock, run_dispatcher=False)
    for type_name in ("slack", "email"):
        runtime.registry.register(recording_channel(type_name), replace=True)
    await runtime.start()
    try:
        run = _Run(runtime, clock, scenario)
        norm = Normalizer(run.start)
        await run.open()
        norm.label(run.approval_id)
        await run.show()
        token, index = run.mint()
        await run.prepare(token)
        before = await snapshot(runtime, run.approval_id, run.alert_id)
        norm.label(run.alert_id)
        norm.label(before.approval["event_id"])
        label_deliveries(list(before.deliveries.values()), norm)
        answer, advanced = await run.act(token, index)
        after = await snapshot(runtime, run.approval_id, run.alert_id)
        changes = writes(before, after, norm)
        result = {
            "answer": answer_document(answer, norm) if answer is not None else None,
            "advanced": advanced,
            "stored": approval_document(after.approval, norm),
        }
        return {"scenario": scenario.name, "setup": scenario.setup(), "result": result, "writes": changes}
    finally:
        await runtime.stop()


def dumps(document: Mapping[str, Any]) -> str:
    """A golden file's text: pretty JSON, sorted keys."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def golden_path(name: str) -> Path:
    return GOLDEN_DIR / f"{name}.json"
