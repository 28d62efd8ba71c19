"""Slack button clicks: Acknowledge / Deny / Escalate become one call to the approvals service.

The button's action_id names the choice and its value is the signed ack token; the token alone decides what the
click means (the service checks signature, expiry, nonce, tenant and the clicker), so a forged action_id buys
nothing. Slack wants an answer within 3 seconds: ack() comes first, the decision after.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.cards import slack as slack_cards
from core.alerts import get_alert
from core.channels.base import Notification
from core.models.approvals import Approval, ApprovalState
from core.models.deliveries import DeliveryPurpose
from core.models.people import Actor
from core.runtime import Runtime

log = logging.getLogger("ackbot.slack")

# The decision buttons the cards draw (bot/cards/slack.py: action_id "ackbot.<choice>", value = ack token).
CHOICE_ACTION = re.compile(r"^ackbot\.(acknowledge|deny|escalate)$")
# Link buttons (the web ack page when a token is too long for a value, "open digest"): Slack still sends a
# block_actions for them, which must be acknowledged or the clicker sees a warning sign.
LINK_ACTION = re.compile(r"^ackbot\.open[._]")

# Seconds a response_url post may take: Slack answers in well under one. The clicked message's update is held for
# the post meanwhile, and the approvals service holds it for longer than this (ANSWER_HOLD).
RESPONSE_TIMEOUT = 10

FAILED = "ackbot could not record your decision. Try again in a moment, or use the link in the message."


def slack_actor(user: dict[str, Any] | None) -> Actor | None:
    """The clicker as Slack vouches for them (the request's signature covers this payload)."""
    user = user or {}
    user_id = str(user.get("id") or user.get("user_id") or "")
    if not user_id:
        return None
    name = user.get("name") or user.get("username") or user.get("user_name") or ""
    return Actor(platform="slack", id=user_id, display_name=str(name))


async def decided_message(runtime: Runtime, approval: Approval) -> dict[str, Any]:
    """The clicked message as it now stands: the decided view of the approval (and its alert, if any)."""
    alert = await get_alert(db=runtime.db, alert_id=approval.alert_id) if approval.alert_id else None
    note = Notification(
        delivery_id=f"slack-click:{approval.id}",
        idempotency_key=f"slack-click:{approval.id}",
        tenant=approval.tenant,
        purpose=DeliveryPurpose.update,
        channel="slack",
        approval=approval,
        alert=alert,
        public_url=runtime.public_url,
    )
    return slack_cards.render_decided(note)


async def post_response(runtime: Runtime, respond: AsyncRespond, message: dict[str, Any]) -> bool:
    """Post a message to the click's response_url over the process's HTTP session; whether Slack took it.

    Bolt's respond() would open a new HTTP session (and connection) for every click.
    """
    if respond.response_url is None:
        raise ValueError("the click came without a response_url")
    client = AsyncWebhookClient(
        url=respond.response_url,
        session=runtime.http,
        proxy=respond.proxy,
        ssl=respond.ssl,
        retry_handlers=[],
        timeout=RESPONSE_TIMEOUT,
    )
    response = await client.send_dict(message)
    body = str(response.body or "")
    # Slack answers {"ok": true} (older response_urls: "ok"); a refusal is a 4xx, or ok:false with the reason.
    if response.status_code >= 300 or '"ok":false' in body.replace(" ", ""):
        log.warning("the response_url answered %s: %s", response.status_code, body[:200])
        return False
    return True


def clicked_message(body: dict[str, Any]) -> dict[str, str] | None:
    """The clicked message's reference as the Slack channel records a posted one (channel id and ts), if the click
    came from a message in a conversation (not an ephemeral reply)."""
    container = body.get("container") or {}
    if container.get("type") != "message" or container.get("is_ephemeral"):
        return None
    channel, ts = container.get("channel_id"), container.get("message_ts")
    if not isinstance(channel, str) or not isinstance(ts, str) or not channel or not ts:
        return None
    return {"channel": channel, "ts": ts}


async def tell(runtime: Runtime, respond: AsyncRespond, text: str) -> None:
    """An ephemeral note to the clicker only; the message they clicked stays as it is."""
    try:
        message = {"response_type": "ephemeral", "replace_original": False, **slack_cards.render_text(text)}
        await post_response(runtime, respond, message)
    except Exception:
        log.exception("could not send an ephemeral reply through the response_url")


def register(bolt: AsyncApp, runtime: Runtime) -> None:
    """Add the click listeners to the Bolt app."""

    async def on_choice(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        actor = slack_actor(body.get("user"))
        if actor is None:
            await tell(runtime, respond, "Slack did not say who clicked; nothing was recorded.")
            return
        # The button names the choice too; the service refuses a token minted for another choice.
        match = CHOICE_ACTION.match(str(action.get("action_id") or ""))
        try:
            # The answer below replaces the clicked message: a final decision holds that message's update for it.
            result = await runtime.approvals.decide(
                token=str(action.get("value") or ""),
                actor=actor,
                choice=match.group(1) if match else None,
                answering=clicked_message(body),
            )
        except Exception:
            log.exception("deciding a Slack click by %s failed", actor.id)
            await tell(runtime, respond, FAILED)
            return
        if not result.ok or result.approval is None:
            await tell(runtime, respond, result.message or "Your decision was not accepted.")
            return
        if result.approval.state is ApprovalState.pending:
            # A vote toward a quorum: the approval is still open and the others still need their buttons.
            await tell(runtime, respond, result.message)
            return
        # The approvals service updates every message of this approval through the outbox; this edit makes the
        # clicker's own copy show the outcome at once, and, once Slack took it, stands for the outbox's edit of
        # that message (held for it). An escalation's edit is not held: the outbox then gives the message the
        # buttons of the next level.
        placed = False
        try:
            message = await decided_message(runtime, result.approval)
            # An empty attachments list removes the old colour bar when the decided view has none, as the outbox's
            # chat.update does: the replaced message is then exactly what that edit would have made it.
            placed = await post_response(runtime, respond, {"replace_original": True, "attachments": [], **message})
        except Exception:
            log.exception("could not update the clicked message of approval %s", result.approval.id)
        finally:
            await runtime.settle_answer(result.held_update, shown=placed)

    async def on_link(ack: AsyncAck) -> None:
        await ack()

    bolt.action(CHOICE_ACTION)(on_choice)
    bolt.action(LINK_ACTION)(on_link)
