"""Text commands to the Teams bot (a 1:1 chat, or an @mention in a channel): list, pending, ack, test, status, help.

The same core calls as the Slack command (bot/handlers/slack_commands.py): the alerts store for ``list``, the
approvals service for ``pending`` and ``ack``, core.commands for ``test`` and ``status``. This module parses the
text Teams sends (the mention already stripped) and renders each answer as an Adaptive Card.
"""

from __future__ import annotations

import logging
from typing import Any

from bot.cards import teams as teams_cards
from bot.handlers.teams_actions import current_note, render
from core import commands
from core.models import Actor, AlertStatus, ApprovalState, Choice, Severity
from core.runtime import Runtime
from core.store import alerts as alert_store

log = logging.getLogger("ackbot.teams")

Card = dict[str, Any]

ALERT_ID_PREFIX = "alr_"
# The states in which an approval still takes decisions.
OPEN_STATES = (ApprovalState.pending, ApprovalState.escalated)
# Open alerts read to pick the top ones from, and how many of those a reply shows.
LIST_SCAN = 500
LIST_SHOWN = 20

# (command, what it does) in the order help shows them; also the command list of the Teams app manifest.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("list", "The most severe open alerts: list [severity] [tenant]"),
    ("pending", "The approvals waiting for your decision"),
    ("ack", "Acknowledge an approval (or an alert's approval): ack <id>"),
    ("test", "Send a test notification through a channel: test <channel>"),
    ("status", "The health of every channel"),
    ("help", "What ackbot can do"),
)


def help_text() -> str:
    """What the bot understands, as the reply to `help` and to anything it does not."""
    return "\n".join(
        [
            "list [severity] [tenant]: the most severe open alerts (severity: at least this level)",
            "pending: the approvals waiting for your decision",
            "ack <alert-id|approval-id>: acknowledge an approval you may decide",
            "test <channel>: send a test notification through a channel (people known to ackbot only)",
            "status: the health of every channel",
            "help: this text",
            "In a channel, @mention ackbot first: @ackbot pending",
        ]
    )


def _text(text: str) -> Card:
    return teams_cards.render_text(text)


async def list_alerts(runtime: Runtime, args: list[str]) -> Card:
    """`list [severity] [tenant]`: the most severe open alerts, newest first within a severity."""
    severity: Severity | None = None
    tenant: str | None = None
    for word in args:
        level = Severity.__members__.get(word.lower())
        if level is not None and severity is None:
            severity = level
        elif tenant is None:
            tenant = word
        else:
            return _text("Too many arguments. Usage: list [severity] [tenant]")
    async with runtime.db.sessions() as session:
        alerts, _ = await alert_store.list_alerts(
            session=session,
            tenants=[tenant] if tenant else None,
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
    return teams_cards.render_alert_list(top, title)


async def pending(runtime: Runtime, actor: Actor) -> Card:
    """`pending`: the approvals the caller may decide."""
    return teams_cards.render_approval_list(list(await runtime.approvals.list_pending_for(actor=actor)))


async def acknowledge(runtime: Runtime, actor: Actor, args: list[str]) -> Card:
    """`ack <alert-id|approval-id>`: acknowledge through the approvals service, which checks the approver."""
    if len(args) != 1:
        return _text("Usage: ack <alert-id|approval-id>")
    approvals = runtime.approvals
    target = args[0]
    approval_id = target
    if target.startswith(ALERT_ID_PREFIX):
        # An alert is acknowledged through its open approval; the service then decides whether this caller may.
        found, _ = await approvals.list_approvals(tenants=None, states=OPEN_STATES, alert_id=target)
        if not found:
            return _text(f"No approval is open on alert {target}.")
        approval_id = found[0].id
    result = await approvals.decide_by_id(approval_id=approval_id, choice=Choice.acknowledge, actor=actor)
    if not result.ok or result.approval is None:
        return _text(result.message or f"{target} was not acknowledged.")
    note = await current_note(runtime, approval=result.approval)
    return render(runtime, note) if note is not None else _text(result.message or f"{target} acknowledged.")


def _known_person(runtime: Runtime, actor: Actor) -> bool:
    return any(person.identities.teams == actor.id for person in runtime.config.people)


async def send_test(runtime: Runtime, actor: Actor, args: list[str]) -> Card:
    """`test <channel>`: a real notification through the channel, and what the receiver said."""
    if len(args) != 1:
        return _text("Usage: test <channel>")
    # A test reaches real receivers (a pager, a mailing list): only people the config names may send one.
    if not _known_person(runtime, actor):
        return _text("Only people listed in ackbot's config (with their Teams identity) may send test notifications.")
    name = args[0]
    try:
        outcome = await commands.send_test(runtime=runtime, channel=name, requested_by=actor.display_name or actor.id)
    except commands.UnknownChannel:
        known = ", ".join(sorted(runtime.channels)) or "none"
        return _text(f"No channel named {name}. Channels: {known}")
    if outcome.ok:
        return _text(f"✅ Test notification sent through {name} (delivery {outcome.delivery_id}).")
    return _text(f"❌ Test notification through {name} failed: {outcome.error}")


async def status(runtime: Runtime) -> Card:
    """`status`: every channel's health, from the deliveries all replicas share."""
    lines = []
    for health in await commands.all_channel_health(runtime=runtime):
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
    return _text("\n".join(lines) or "No channels are configured.")


async def run(runtime: Runtime, actor: Actor, text: str) -> Card:
    """Parse and run one command line; anything not understood gets the help."""
    words = text.split()
    sub, args = (words[0].lower().lstrip("/"), words[1:]) if words else ("help", [])
    if sub == "list":
        return await list_alerts(runtime, args)
    if sub == "pending":
        return await pending(runtime, actor)
    if sub == "ack":
        return await acknowledge(runtime, actor, args)
    if sub == "test":
        return await send_test(runtime, actor, args)
    if sub == "status":
        return await status(runtime)
    if sub == "help":
        return _text(help_text())
    return _text(f"Unknown command {sub!r}.\n{help_text()}")
