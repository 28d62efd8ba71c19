"""The slash command (/ackbot by default): list, pending, ack, silence, test, status, help.

Each sub-command is one call into core (alerts store, approvals service, core.commands); this module only parses
the text Slack sends and renders the answer with bot/cards/slack.py. Replies are ephemeral (only the caller sees
them) unless the caller adds ``--public``. The command is acknowledged at once and answered through the
response_url, so slow work never runs into Slack's 3 seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.cards import slack as slack_cards
from bot.handlers.slack_actions import decided_message, slack_actor
from core import commands, silences
from core.models import Actor, AlertStatus, ApprovalState, Choice, Severity
from core.runtime import Runtime
from core.store import alerts as alert_store

log = logging.getLogger("ackbot.slack")

USAGE_HINT = (
    "list [severity] [tenant] | pending | ack <alert-id|approval-id> | silence <alert-id> <duration> [comment]"
    " | test <channel> | status | help"
)
PUBLIC_FLAG = "--public"
# Alert ids are new_id("alr"): `ack` tells them from approval ids by this.
ALERT_ID_PREFIX = "alr_"
OPEN_STATES = (ApprovalState.pending, ApprovalState.escalated)
# Open alerts read to pick the top ones from, and how many of those a reply shows.
LIST_SCAN = 500
LIST_SHOWN = 20


def help_text(command: str) -> str:
    """What the command can do, as the reply to `help` and to anything it does not understand."""
    return "\n".join(
        [
            f"{command} list [severity] [tenant]: the most severe open alerts (severity: at least this level)",
            f"{command} pending: the approvals waiting for your decision",
            f"{command} ack <alert-id|approval-id>: acknowledge an approval you may decide",
            f"{command} silence <alert-id> <duration> [comment]: quiet an alert for a while (2h, 1d)",
            f"{command} test <channel>: send a test notification through a channel (people known to ackbot only)",
            f"{command} status: the health of every channel",
            f"{command} help: this text",
            f"Replies are visible only to you; add {PUBLIC_FLAG} to show one to the channel.",
        ]
    )


@dataclass(frozen=True)
class Reply:
    """A rendered answer and whether the whole channel sees it."""

    message: dict[str, Any]
    public: bool = False


def _text(text: str) -> dict[str, Any]:
    return slack_cards.render_text(text)


async def list_alerts(runtime: Runtime, args: list[str], command: str) -> dict[str, Any]:
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
            return _text(f"Too many arguments. Usage: {command} list [severity] [tenant]")
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
    return slack_cards.render_alert_list(top, title)


async def pending(runtime: Runtime, actor: Actor) -> dict[str, Any]:
    """`pending`: the approvals the caller may decide."""
    return slack_cards.render_approval_list(await runtime.approvals.list_pending_for(actor=actor))


async def acknowledge(runtime: Runtime, actor: Actor, args: list[str], command: str) -> dict[str, Any]:
    """`ack <alert-id|approval-id>`: acknowledge through the approvals service, which checks the approver."""
    if len(args) != 1:
        return _text(f"Usage: {command} ack <alert-id|approval-id>")
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
    return await decided_message(runtime, result.approval)


async def silence(runtime: Runtime, actor: Actor, args: list[str], command: str) -> dict[str, Any]:
    """`silence <alert-id> <duration> [comment]`: core.commands.silence checks who may, and the duration."""
    if len(args) < 2:
        return _text(f"Usage: {command} silence <alert-id> <duration> [comment], e.g. {command} silence alr_… 2h")
    alert_id, duration, comment = args[0], args[1], " ".join(args[2:])
    try:
        made = await commands.silence(
            runtime=runtime, alert_id=alert_id, duration=duration, actor=actor, comment=comment
        )
    except silences.SilenceError as exc:
        return _text(f"{exc}. Usage: {command} silence <alert-id> <duration> [comment]")
    except commands.NotAllowed as exc:
        return _text(f"Not allowed: {exc}.")
    except commands.UnknownAlert:
        return _text(f"No alert {alert_id}.")
    return _text(f"🔕 {alert_id} is silenced until {made.ends_at:%Y-%m-%d %H:%M} UTC (silence {made.id}).")


def _known_person(runtime: Runtime, actor: Actor) -> bool:
    return any(person.identities.slack == actor.id for person in runtime.config.people)


async def send_test(runtime: Runtime, actor: Actor, args: list[str], command: str) -> dict[str, Any]:
    """`test <channel>`: a real notification through the channel, and what the receiver said."""
    if len(args) != 1:
        return _text(f"Usage: {command} test <channel>")
    # A test reaches real receivers (a pager, a mailing list): only people the config names may send one.
    if not _known_person(runtime, actor):
        return _text("Only people listed in ackbot's config (with their Slack user id) may send test notifications.")
    name = args[0]
    try:
        outcome = await commands.send_test(runtime=runtime, channel=name, requested_by=actor.display_name or actor.id)
    except commands.UnknownChannel:
        known = ", ".join(sorted(runtime.channels)) or "none"
        return _text(f"No channel named {name}. Channels: {known}")
    if outcome.ok:
        return _text(f"✅ Test notification sent through {name} (delivery {outcome.delivery_id}).")
    return _text(f"❌ Test notification through {name} failed: {outcome.error}")


async def status(runtime: Runtime) -> dict[str, Any]:
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


async def run(runtime: Runtime, actor: Actor, text: str, command: str) -> Reply:
    """Parse and run one command line; anything not understood gets the help."""
    words = text.split()
    public = PUBLIC_FLAG in words
    words = [w for w in words if w != PUBLIC_FLAG]
    sub, args = (words[0].lower(), words[1:]) if words else ("help", [])
    if sub == "list":
        message = await list_alerts(runtime, args, command)
    elif sub == "pending":
        message = await pending(runtime, actor)
    elif sub == "ack":
        message = await acknowledge(runtime, actor, args, command)
    elif sub == "silence":
        message = await silence(runtime, actor, args, command)
    elif sub == "test":
        message = await send_test(runtime, actor, args, command)
    elif sub == "status":
        message = await status(runtime)
    elif sub == "help":
        message = _text(help_text(command))
    else:
        message = _text(f"Unknown sub-command {sub!r}.\n{help_text(command)}")
    return Reply(message, public)


def register(bolt: AsyncApp, runtime: Runtime, *, command: str) -> None:
    """Add the slash command listener to the Bolt app."""

    async def on_command(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        actor = slack_actor(body)
        if actor is None:
            return
        try:
            reply = await run(runtime, actor, str(body.get("text") or ""), command)
        except Exception:
            log.exception("%s %r by %s failed", command, body.get("text"), actor.id)
            reply = Reply(_text("Something went wrong; the error is in ackbot's log."))
        try:
            await respond(response_type="in_channel" if reply.public else "ephemeral", **reply.message)
        except Exception:
            log.exception("could not answer %s through the response_url", command)

    bolt.command(command)(on_command)
