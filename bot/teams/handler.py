"""The Teams activity handler: installs, card actions (Action.Execute and Action.Submit) and text commands.

Only translation happens here: the activity is read for its conversation, its clicker (``from.aadObjectId``,
which Bot Framework's signed token vouches for), its token or command text, and handed to bot/handlers.

Card clicks arrive as an ``invoke`` named ``adaptiveCard/action``. We override ``on_invoke_activity`` rather than
``on_adaptive_card_invoke``: under CloudAdapter in botbuilder 4.17 the latter's answer is serialized twice and the
request fails with HTTP 500. The answer is an InvokeResponse whose body is an AdaptiveCardInvokeResponse carrying
the card to show in place of the clicked one.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from botbuilder.core import TurnContext
from botbuilder.core.teams import TeamsActivityHandler
from botbuilder.schema import Activity, AdaptiveCardInvokeResponse, Attachment

from bot.cards import teams as teams_cards
from bot.handlers import teams_actions, teams_commands
from bot.teams.activity import channel_conversation_id, invoke_response
from core import conversations
from core.models.people import Actor
from core.runtime import Runtime

log = logging.getLogger("ackbot.teams")

ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
ERROR_TYPE = "application/vnd.microsoft.error"
CARD_ACTION = "adaptiveCard/action"
REFRESH_VERB = "refresh"
_AT_RE = re.compile(r"<at[^>]*>.*?</at>", re.IGNORECASE | re.DOTALL)


def teams_actor(activity: Any) -> Actor | None:
    """The person who acted, as Teams identifies them: their Entra ID object id (None for bots and strangers)."""
    sender = getattr(activity, "from_property", None)
    aad = getattr(sender, "aad_object_id", None)
    if not aad:
        return None
    return Actor(platform="teams", id=str(aad), display_name=str(getattr(sender, "name", "") or ""))


def card_attachment(card: dict[str, Any]) -> Any:
    return Attachment(content_type=ADAPTIVE_CARD, content=card)


def card_invoke(card: dict[str, Any]) -> Any:
    """The answer to an adaptiveCard/action invoke: show this card in place of the clicked one."""
    return invoke_response(AdaptiveCardInvokeResponse(status_code=200, type=ADAPTIVE_CARD, value=card))


def error_invoke(status: int, code: str, message: str) -> Any:
    """An invoke answer Teams shows as an error next to the card."""
    body = AdaptiveCardInvokeResponse(status_code=status, type=ERROR_TYPE, value={"code": code, "message": message})
    return invoke_response(body)


def command_text(activity: Any) -> str:
    """The text of a message without the @mention of the bot (and any other <at> tags)."""
    try:
        text = TurnContext.remove_recipient_mention(activity) or ""
    except Exception:
        # Odd mention entities (no "mentioned", regex characters in a name) must not cost the command.
        text = getattr(activity, "text", "") or ""
    return " ".join(_AT_RE.sub(" ", text).split())


def _dict(value: Any) -> dict[str, Any]:
    """A JSON object from an untyped payload, or an empty one."""
    return value if isinstance(value, dict) else {}


def _channel_data(activity: Any) -> dict[str, Any]:
    return _dict(getattr(activity, "channel_data", None))


def conversation_info(activity: Any) -> dict[str, Any]:
    """What conversations.upsert stores for the conversation an activity came from."""
    conversation = activity.conversation
    data = _channel_data(activity)
    team = _dict(data.get("team"))
    channel = _dict(data.get("channel"))
    kind = getattr(conversation, "conversation_type", None) or ("channel" if team else "personal")
    tenant = getattr(conversation, "tenant_id", None) or _dict(data.get("tenant")).get("id")
    conversation_id = str(conversation.id)
    info: dict[str, Any] = {"tenant_id": tenant, "service_url": activity.service_url}
    name: str | None = None
    if kind == "channel":
        # Posts go to the channel, not into the thread of whatever message this activity answered.
        conversation_id = channel_conversation_id(conversation_id)
        channel_name = channel.get("name") if channel.get("id") == conversation_id else None
        if not channel_name and team.get("id") == conversation_id:
            # The General channel shares the team's id and comes without a name.
            channel_name = "General"
        team_name = team.get("name")
        if team_name and channel_name:
            name = f"{team_name}/{channel_name}"
        info.update(team_id=team.get("id"), team_name=team_name, channel_id=conversation_id, channel_name=channel_name)
    elif kind == "groupChat":
        name = getattr(conversation, "name", None) or None
    else:
        kind = "personal"
        sender: Any = getattr(activity, "from_property", None)
        info["user_aad_id"] = getattr(sender, "aad_object_id", None)
        if getattr(sender, "name", None):
            name = f"user:{sender.name}"
    reference = TurnContext.get_conversation_reference(activity).serialize()
    reference.pop("activityId", None)
    if kind != "personal":
        # Whoever spoke last is not part of where the conversation is.
        reference.pop("user", None)
    reference.setdefault("conversation", {})["id"] = conversation_id
    info.update(conversation_id=conversation_id, name=name, kind=kind, reference=reference)
    return info


def _bot_in(members: Any, bot_id: str | None) -> bool:
    return any(getattr(member, "id", None) == bot_id for member in members or [])


class AckbotTeamsHandler(TeamsActivityHandler):  # type: ignore[misc]
    """Routes Teams activities to bot/handlers; one per process (owned by TeamsBot)."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime

    # ---------------------------------------------------------------- conversations

    async def on_turn(self, turn_context: Any) -> None:
        activity = turn_context.activity
        if activity.type in ("message", "conversationUpdate", "installationUpdate") and not self._is_removal(activity):
            await self._remember(activity)
        await super().on_turn(turn_context)

    @staticmethod
    def _is_removal(activity: Any) -> bool:
        if activity.type == "installationUpdate":
            return str(activity.action or "").startswith("remove")
        data = _channel_data(activity)
        if data.get("eventType") in ("channelDeleted", "teamDeleted", "teamHardDeleted", "teamArchived"):
            return True
        return _bot_in(activity.members_removed, getattr(activity.recipient, "id", None))

    async def _remember(self, activity: Any) -> None:
        """Store (or refresh) the conversation this activity came from; failures are logged, never fatal."""
        try:
            info = conversation_info(activity)
            await conversations.remember(db=self.runtime.db, now=self.runtime.clock.now(), **info)
        except Exception:
            log.exception("Teams: could not store the conversation reference of a %s activity", activity.type)

    async def on_conversation_update_activity(self, turn_context: Any) -> None:
        """Teams' team and channel events; the base class's member look-ups (a connector call each) are skipped."""
        activity = turn_context.activity
        data = _channel_data(activity)
        team = _dict(data.get("team"))
        channel = _dict(data.get("channel"))
        event = data.get("eventType")
        bot_id = getattr(activity.recipient, "id", None)
        now = self.runtime.clock.now()
        db = self.runtime.db
        if _bot_in(activity.members_removed, bot_id) or event in ("teamDeleted", "teamHardDeleted"):
            if team.get("id"):
                await conversations.mark_removed(db=db, now=now, team_id=team["id"])
            else:
                await conversations.mark_removed(
                    db=db, now=now, conversation_id=channel_conversation_id(activity.conversation.id)
                )
        elif event in ("channelCreated", "channelRenamed", "channelRestored") and channel.get("id"):
            info = conversation_info(activity)
            reference = dict(info["reference"])
            reference["conversation"] = {**reference.get("conversation", {}), "id": channel["id"]}
            team_name = team.get("name")
            await conversations.remember(
                db=db,
                now=now,
                conversation_id=channel["id"],
                name=f"{team_name}/{channel.get('name')}" if team_name and channel.get("name") else None,
                kind="channel",
                service_url=info["service_url"],
                reference=reference,
                tenant_id=info["tenant_id"],
                team_id=team.get("id"),
                team_name=team_name,
                channel_id=channel["id"],
                channel_name=channel.get("name"),
            )
        elif event == "channelDeleted" and channel.get("id"):
            await conversations.mark_removed(db=db, now=now, conversation_id=channel["id"])
        elif event == "teamRenamed" and team.get("id") and team.get("name"):
            await conversations.rename_team(db=db, team_id=team["id"], team_name=team["name"], now=now)

    async def on_installation_update_add(self, turn_context: Any) -> None:
        """Installed (or upgraded): say under which name operators can target this conversation."""
        info = conversation_info(turn_context.activity)
        stored = await conversations.get_conversation(db=self.runtime.db, conversation_id=info["conversation_id"])
        name = stored.name if stored is not None else info["conversation_id"]
        text = (
            f"ackbot is installed here. Operators can send notifications to this conversation with a channel of "
            f"type teams and the setting conversation: {name} (or its id {info['conversation_id']}). "
            "Say help to see what I understand."
        )
        try:
            await turn_context.send_activity(Activity(type="message", attachments=[card_attachment(_text_card(text))]))
        except Exception:
            log.warning("Teams: could not post the welcome message in %s", name, exc_info=True)

    async def on_installation_update_remove(self, turn_context: Any) -> None:
        """Uninstalled: from a team, every channel of it goes; from a chat, that chat."""
        activity = turn_context.activity
        team_id = _dict(_channel_data(activity).get("team")).get("id")
        await conversations.mark_removed(
            db=self.runtime.db,
            now=self.runtime.clock.now(),
            conversation_id=channel_conversation_id(activity.conversation.id),
            team_id=team_id,
        )

    # ---------------------------------------------------------------- messages: commands and Action.Submit

    async def on_message_activity(self, turn_context: Any) -> None:
        activity = turn_context.activity
        value = activity.value
        if isinstance(value, dict) and isinstance(value.get("token"), str):
            await self._submit(turn_context, value)
            return
        text = command_text(activity)
        actor = teams_actor(activity)
        if actor is None:
            card = _text_card("ackbot cannot tell who you are (no Entra ID identity on this message).")
        else:
            card = await teams_commands.run(self.runtime, actor, text)
        await turn_context.send_activity(Activity(type="message", attachments=[card_attachment(card)]))

    async def _submit(self, turn_context: Any, value: dict[str, Any]) -> None:
        """Action.Submit (clients older than card 1.5): decide, then edit the clicked message in place."""
        activity = turn_context.activity
        actor = teams_actor(activity)
        if actor is None:
            answer = teams_actions.CardAnswer(_text_card("ackbot cannot tell who clicked."), False)
        else:
            conversation_id = channel_conversation_id(activity.conversation.id)
            choice = value.get("choice") if isinstance(value.get("choice"), str) else None
            answer = await teams_actions.decide(
                self.runtime, token=value["token"], actor=actor, conversation_id=conversation_id, choice=choice
            )
        message = Activity(type="message", attachments=[card_attachment(answer.card)])
        if activity.reply_to_id:
            message.id = activity.reply_to_id
            message.conversation = activity.conversation
            try:
                await turn_context.update_activity(message)
                return
            except Exception:
                log.warning("Teams: could not edit the clicked message; replying instead", exc_info=True)
                message.id = None
        await turn_context.send_activity(message)

    # ---------------------------------------------------------------- invokes: Action.Execute and refresh

    async def on_invoke_activity(self, turn_context: Any) -> Any:
        if turn_context.activity.name == CARD_ACTION:
            return await self._card_action(turn_context)
        return await super().on_invoke_activity(turn_context)

    async def _card_action(self, turn_context: Any) -> Any:
        activity = turn_context.activity
        action = _dict(_dict(activity.value).get("action"))
        verb = action.get("verb")
        data = _dict(action.get("data"))
        conversation_id = channel_conversation_id(str(getattr(activity.conversation, "id", "") or "")) or None
        try:
            if verb == REFRESH_VERB:
                answer = await teams_actions.refresh(self.runtime, data=data, conversation_id=conversation_id)
                if answer is None:
                    return card_invoke(_text_card("ackbot no longer knows this message."))
                return card_invoke(answer.card)
            token = data.get("token")
            if not isinstance(token, str) or not token:
                return error_invoke(400, "BadRequest", f"ackbot does not know the action {verb!r}")
            actor = teams_actor(activity)
            if actor is None:
                return error_invoke(401, "Unauthorized", "ackbot cannot tell who clicked (no Entra ID identity)")
            answer = await teams_actions.decide(
                self.runtime, token=token, actor=actor, conversation_id=conversation_id, choice=verb
            )
            return card_invoke(answer.card)
        except Exception:
            log.exception("Teams: the card action %r failed", verb)
            return error_invoke(500, "InternalError", "ackbot could not record your choice; try again in a moment")


def _text_card(text: str) -> dict[str, Any]:
    return teams_cards.render_text(text)
