"""The chat command language, the same on every platform: Slack's slash command and Teams' text commands parse
and run here, and each platform only renders the Answer with its own cards."""

from __future__ import annotations

from dataclasses import dataclass, field

from core import commands, silences
from core.models.approvals import Approval, ApprovalState, Choice
from core.models.common import Severity
from core.models.events import Alert, AlertStatus
from core.models.people import ALL_TENANTS, Actor
from core.runtime import Runtime
from core.store import alerts as alert_store

# Alert ids are new_id("alr"): `ack` tells them from approval ids by this.
ALERT_ID_PREFIX = "alr_"
OPEN_STATES = (ApprovalState.pending, ApprovalState.escalated)
# Open alerts read to pick the top ones from, and how many of those an answer shows.
LIST_SCAN = 500
LIST_SHOWN = 20
# Approvals a `pending` answer shows at most, as the approvals service lists them.
PENDING_SHOWN = 50


@dataclass(frozen=True)
class Command:
    name: str
    arguments: str
    description: str

    def usage(self, prefix: str = "") -> str:
        """How to type it, e.g. "/ackbot silence <alert-id> <duration> [comment]"."""
        return " ".join(part for part in (prefix, self.name, self.arguments) if part)


# In the order help lists them; Teams' app manifest lists the same.
COMMANDS: tuple[Command, ...] = (
    Command("list", "[severity] [tenant]", "the most severe open alerts (severity: at least this level)"),
    Command("pending", "", "the approvals waiting for your decision"),
    Command("ack", "<alert-id|approval-id>", "acknowledge an approval you may decide"),
    Command("silence", "<alert-id> <duration> [comment]", "quiet an alert for a while (2h, 1d)"),
    Command("test", "<channel>", "send a test notification through a channel (people known to ackbot only)"),
    Command("status", "", "the health of every channel"),
    Command("help", "", "this text"),
)
BY_NAME = {command.name: command for command in COMMANDS}


@dataclass(frozen=True)
class Answer:
    """What a command answers, for the platform to render: text, an alert list, an approval list, or a decision."""

    text: str = ""
    alerts: list[Alert] | None = None
    approvals: list[Approval] | None = None
    decided: Approval | None = None
    title: str = ""
    notes: list[str] = field(default_factory=list)


def help_text(prefix: str = "") -> str:
    """Every command with its arguments and what it does."""
    return "\n".join(f"{command.usage(prefix)}: {command.description}" for command in COMMANDS)


def _usage(name: str, prefix: str) -> Answer:
    return Answer(text=f"Usage: {BY_NAME[name].usage(prefix)}")


def _refusal(scope: commands.TenantScope, tenant: str | None = None) -> Answer | None:
    """Why the caller may not look (at this tenant, or at any), or None when they may."""
    if scope.empty:
        return Answer(text=f"Not allowed: you see no tenant ({scope.source}).")
    if tenant is not None and not scope.allows(tenant):
        return Answer(text=f"Not allowed: you do not see tenant {tenant!r}, only {scope.describe()} ({scope.source}).")
    return None


async def list_alerts(*, runtime: Runtime, actor: Actor, args: list[str], prefix: str = "") -> Answer:
    """`list [severity] [tenant]`: the most severe open alerts of the tenants the caller sees, newest first."""
    severity: Severity | None = None
    tenant: str | None = None
    for word in args:
        level = Severity.__members__.get(word.lower())
        if level is not None and severity is None:
            severity = level
        elif tenant is None:
            tenant = word
        else:
            return _usage("list", prefix)
    scope = commands.chat_scope(runtime=runtime, actor=actor)
    refused = _refusal(scope, tenant)
    if refused is not None:
        return refused
    async with runtime.db.read() as session:
        alerts, _ = await alert_store.list_alerts(
            session=session,
            tenants=[tenant] if tenant else scope.tenants,
            status=AlertStatus.open,
            min_severity=severity,
            limit=LIST_SCAN,
        )
    top = sorted(alerts, key=lambda a: (-a.severity.rank, -a.last_seen.timestamp()))[:LIST_SHOWN]
    title = "Open alerts"
    if severity is not None:
        title += f", {severity.value} and above"
    if tenant:
        title += f", tenant {tenant}"
    elif not scope.everything:
        title += f", tenants {scope.describe()}"
    return Answer(alerts=top, title=title)


async def pending(*, runtime: Runtime, actor: Actor) -> Answer:
    """`pending`: the approvals the caller may decide, in the tenants they see."""
    scope = commands.chat_scope(runtime=runtime, actor=actor)
    refused = _refusal(scope)
    if refused is not None:
        return refused
    if scope.everything:
        return Answer(approvals=list(await runtime.approvals.list_pending_for(actor=actor)))
    # One query per tenant: filtering one scan of every tenant could miss this caller's among another tenant's many.
    found = [
        approval
        for tenant in sorted(scope.names)
        for approval in await runtime.approvals.list_pending_for(actor=actor, tenant=tenant)
    ]
    return Answer(approvals=sorted(found, key=lambda a: a.created_at, reverse=True)[:PENDING_SHOWN])


async def acknowledge(*, runtime: Runtime, actor: Actor, args: list[str], prefix: str = "") -> Answer:
    """`ack <alert-id|approval-id>`: acknowledge through the approvals service, which checks the approver."""
    if len(args) != 1:
        return _usage("ack", prefix)
    approvals = runtime.approvals
    target = args[0]
    scope = commands.chat_scope(runtime=runtime, actor=actor)
    refused = _refusal(scope)
    if refused is not None:
        return refused
    if target.startswith(ALERT_ID_PREFIX):
        # An alert is acknowledged through its open approval; the service then decides whether this caller may.
        found, _ = await approvals.list_approvals(tenants=scope.tenants, states=OPEN_STATES, alert_id=target)
        if not found:
            return Answer(text=f"No approval is open on alert {target}.")
        approval = found[0]
    else:
        maybe = await approvals.get(approval_id=target)
        # Out of the caller's sight is answered as if it did not exist, as list and pending would show it.
        if maybe is None or not scope.allows(maybe.tenant):
            return Answer(text=f"No approval {target}.")
        approval = maybe
    # The tenant goes along: the service checks it again, under the approval's lock.
    result = await approvals.decide_by_id(
        approval_id=approval.id, choice=Choice.acknowledge, actor=actor, tenant=approval.tenant
    )
    if not result.ok or result.approval is None:
        return Answer(text=result.message or f"{target} was not acknowledged.")
    return Answer(decided=result.approval, text=result.message or f"{target} acknowledged.")


async def silence(*, runtime: Runtime, actor: Actor, args: list[str], prefix: str = "") -> Answer:
    """`silence <alert-id> <duration> [comment]`: core.commands.silence checks who may, and the duration."""
    if len(args) < 2:
        return _usage("silence", prefix)
    alert_id, duration, comment = args[0], args[1], " ".join(args[2:])
    try:
        made = await commands.silence(
            runtime=runtime, alert_id=alert_id, duration=duration, actor=actor, comment=comment
        )
    except silences.SilenceError as exc:
        return Answer(text=f"{exc}. Usage: {BY_NAME['silence'].usage(prefix)}")
    except commands.NotAllowed as exc:
        return Answer(text=f"Not allowed: {exc}.")
    except commands.UnknownAlert:
        return Answer(text=f"No alert {alert_id}.")
    return Answer(text=f"🔕 {alert_id} is silenced until {made.ends_at:%Y-%m-%d %H:%M} UTC (silence {made.id}).")


def channels_seen(runtime: Runtime, actor: Actor) -> set[str]:
    """The channels a chat user sees: their tenants' and the shared ones (another tenant's are not there)."""
    scope = commands.chat_scope(runtime=runtime, actor=actor)
    return {
        name
        for name, config in runtime.channel_configs.items()
        if name in runtime.channels and (config.tenant == ALL_TENANTS or scope.allows(config.tenant))
    }


async def send_test(*, runtime: Runtime, actor: Actor, args: list[str], prefix: str = "") -> Answer:
    """`test <channel>`: a real notification through the channel, and what the receiver said."""
    if len(args) != 1:
        return _usage("test", prefix)
    # A test reaches real receivers (a pager, a mailing list): only people the config names may send one.
    if commands.person_of(runtime, actor) is None:
        return Answer(text="Only people listed in ackbot's config may send test notifications.")
    name = args[0]
    seen = channels_seen(runtime, actor)
    try:
        if name not in seen:
            raise commands.UnknownChannel(name)
        outcome = await commands.send_test(runtime=runtime, channel=name, requested_by=actor.display_name or actor.id)
    except commands.UnknownChannel:
        known = ", ".join(sorted(seen)) or "none"
        return Answer(text=f"No channel named {name}. Channels: {known}")
    if outcome.ok:
        return Answer(text=f"✅ Test notification sent through {name} (delivery {outcome.delivery_id}).")
    return Answer(text=f"❌ Test notification through {name} failed: {outcome.error}")


async def status(*, runtime: Runtime, actor: Actor) -> Answer:
    """`status`: the health of every channel the caller sees, from the deliveries all replicas share."""
    lines = []
    seen = channels_seen(runtime, actor)
    for health in await commands.all_channel_health(runtime=runtime):
        if health.channel not in seen:
            continue
        mark = "✅" if health.consecutive_failures == 0 else "❌"
        parts = [f"{mark} {health.channel}"]
        if health.last_success is not None:
            parts.append(f"last success {health.last_success:%Y-%m-%d %H:%M} UTC")
        if health.consecutive_failures:
            parts.append(f"{health.consecutive_failures} failures since; last: {health.last_error or 'unknown'}")
        if health.pending:
            parts.append(f"{health.pending} waiting")
        if health.dead:
            parts.append(f"{health.dead} dead")
        lines.append(" · ".join(parts))
    return Answer(text="\n".join(lines) or "No channels are configured.")


async def run(*, runtime: Runtime, actor: Actor, text: str, prefix: str = "") -> Answer:
    """Parse and run one command line; anything not understood gets the help."""
    words = text.split()
    sub, args = (words[0].lower().lstrip("/"), words[1:]) if words else ("help", [])
    if sub == "list":
        return await list_alerts(runtime=runtime, actor=actor, args=args, prefix=prefix)
    if sub == "pending":
        return await pending(runtime=runtime, actor=actor)
    if sub == "ack":
        return await acknowledge(runtime=runtime, actor=actor, args=args, prefix=prefix)
    if sub == "silence":
        return await silence(runtime=runtime, actor=actor, args=args, prefix=prefix)
    if sub == "test":
        return await send_test(runtime=runtime, actor=actor, args=args, prefix=prefix)
    if sub == "status":
        return await status(runtime=runtime, actor=actor)
    if sub == "help":
        return Answer(text=help_text(prefix))
    return Answer(text=f"Unknown command {sub!r}.\n{help_text(prefix)}")
