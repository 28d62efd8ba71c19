"""Clicks and refreshes on Teams cards: an Adaptive Card action in, the core decision, the card to show back.

The Teams handler (bot/teams/handler.py) only extracts the token, the verb and the clicker from the activity;
everything here is the same core call every surface makes (``runtime.approvals.decide``) and the same cards
the dispatcher sends. The card shown after a click is rendered exactly as the update deliveries will render it:
from the delivery that posted the message, read fresh, so the invoke answer and the later ``update_activity``
of the other messages agree.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

from bot.cards import teams as teams_cards
from bot.cards.common import json_size
from core.alerts import get_alert
from core.approvals import DecisionResult
from core.channels.base import Notification
from core.deliveries import latest_sent_notification
from core.models.approvals import Approval, Choice
from core.models.deliveries import DeliveryPurpose
from core.models.events import Alert
from core.models.people import Actor
from core.runtime import Runtime

log = logging.getLogger("ackbot.teams")

Card = dict[str, Any]

# The channel type whose deliveries carry Teams messages (bot/teams/channel.py).
TEAMS_TYPE = "teams"
CHOICES = frozenset(choice.value for choice in Choice)


@dataclass(frozen=True)
class CardAnswer:
    """The card to show after an action, and whether the action did what was asked."""

    card: Card
    ok: bool
    message: str = ""


def teams_channel_names(runtime: Runtime) -> list[str]:
    """The channels in service whose messages live in Teams."""
    return sorted(name for name, channel in runtime.channels.items() if getattr(channel, "type", "") == TEAMS_TYPE)


def render(runtime: Runtime, note: Notification) -> Card:
    """The Teams card for a notification, with the renderer the dispatcher uses."""
    renderer = runtime.renderers.get(TEAMS_TYPE) or teams_cards.render
    return renderer(note)


def with_notice(card: Card, text: str) -> Card:
    """The card with a visible line saying why an action was refused; the card itself is left as it was."""
    shown: Card = copy.deepcopy(card)
    notice = {
        "type": "TextBlock",
        "text": f"⚠️ {teams_cards.escape(text)}",
        "wrap": True,
        "color": "attention",
        "weight": "Bolder",
        "spacing": "Medium",
    }
    body = list(shown.get("body") or [])
    # Under the coloured banner, where the eye lands, not below a long summary.
    body.insert(1 if body else 0, notice)
    shown["body"] = body
    if json_size(shown) > teams_cards.DEFAULT_MAX_BYTES:
        return teams_cards.render_text(text)
    return shown


async def current_note(
    runtime: Runtime,
    *,
    approval_id: str | None = None,
    alert_id: str | None = None,
    approval: Approval | None = None,
    conversation_id: str | None = None,
) -> Notification | None:
    """The notification as it stands now: from its Teams delivery when there is one, else built from the store."""
    if approval is not None:
        approval_id = approval.id
        alert_id = alert_id or approval.alert_id
    # The Teams delivery that posted the message about this approval or alert, in this conversation if any.
    row = await latest_sent_notification(
        db=runtime.db,
        channels=teams_channel_names(runtime),
        approval_id=approval_id,
        alert_id=alert_id,
        conversation_id=conversation_id,
    )
    note: Notification | None = None
    if row is not None and runtime.dispatcher is not None:
        note = await runtime.dispatcher.build_notification(row)
    if note is None:
        if approval is None and approval_id:
            approval = await runtime.approvals.get(approval_id=approval_id)
        alert: Alert | None = await get_alert(db=runtime.db, alert_id=alert_id) if alert_id else None
        if approval is None and alert is None:
            return None
        tenant = approval.tenant if approval is not None else alert.tenant  # type: ignore[union-attr]
        note = Notification(
            delivery_id="teams-action",
            idempotency_key="teams-action",
            tenant=tenant,
            purpose=DeliveryPurpose.update,
            channel=TEAMS_TYPE,
            approval=approval,
            alert=alert,
            public_url=runtime.public_url,
        )
    elif approval is not None and (note.approval is None or note.approval.state != approval.state):
        # The decision just committed is the truth, whatever an enricher read a moment before.
        note = note.model_copy(update={"approval": approval})
    # As an update: an acknowledged or resolved alert shows its outcome, as the update deliveries do; rendered
    # as of now, so "expires in ..." is counted from the moment the card is shown, not from when it was sent.
    return note.model_copy(update={"purpose": DeliveryPurpose.update, "created_at": runtime.clock.now()})


async def refresh(runtime: Runtime, *, data: dict[str, Any], conversation_id: str | None) -> CardAnswer | None:
    """The current card for a refresh invoke ({"approval_id": ...} or {"alert_id": ...}); None if unknown."""
    approval_id = data.get("approval_id") if isinstance(data.get("approval_id"), str) else None
    alert_id = data.get("alert_id") if isinstance(data.get("alert_id"), str) else None
    if not approval_id and not alert_id:
        return None
    note = await current_note(runtime, approval_id=approval_id, alert_id=alert_id, conversation_id=conversation_id)
    if note is None:
        return None
    return CardAnswer(render(runtime, note), True)


def refusal_text(result: DecisionResult) -> str:
    """Why a click did nothing, in words for the person who clicked (the service words it for every surface)."""
    return result.message or f"Your choice was not recorded ({result.reason.value})."


async def decide(
    runtime: Runtime, *, token: str, actor: Actor, conversation_id: str | None, choice: str | None = None
) -> CardAnswer:
    """Record a click through approvals.decide; the updated card, or the current card with the reason it was refused.

    choice is the button's own (the Action.Execute verb): the service checks that the token says the same.
    """
    result = await runtime.approvals.decide(token=token, actor=actor, choice=choice if choice in CHOICES else None)
    note = None
    if result.approval is not None:
        note = await current_note(runtime, approval=result.approval, conversation_id=conversation_id)
    if result.ok:
        if note is None:
            return CardAnswer(
                teams_cards.render_text(result.message or "Your choice was recorded."), True, result.message
            )
        return CardAnswer(render(runtime, note), True, result.message)
    reason = refusal_text(result)
    log.info("Teams: %s (%s) was refused: %s", actor.display_name or actor.id, actor.id, reason)
    if note is None:
        return CardAnswer(teams_cards.render_text(reason), False, reason)
    return CardAnswer(with_notice(render(runtime, note), reason), False, reason)
