"""The "teams" channel: Adaptive Cards 1.5 posted by the bot into a stored Teams conversation, and edited later.

Settings name the conversation (a name or id from ``ackbot teams conversations``); a delivery's target may name
another one, or a person (``person:NAME`` from the config's people, or an Entra ID object id), which means the
bot's 1:1 chat with them: the stored one, else one created through the connector (Teams allows that only where
the app is installed for the person).

The message reference is ``{"conversation_id", "activity_id", "service_url", "tenant_id"}``: enough to rebuild
the conversation reference and ``update_activity`` the card when the approval is decided.

Teams throttles a bot per conversation (7 messages a second, 8 in 2 s, 60 in 30 s, 1800 an hour) and answers
429; 412 (a concurrent edit), 502 and 504 are momentary too. These are TransientChannelErrors the dispatcher
retries with backoff and jitter; other 4xx are permanent (403: the bot was removed; 404: no such conversation).
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from bot.cards import teams as teams_cards
from core import conversations
from core.channels.base import BaseChannel, ChannelContext, ChannelSettings, Notification, SendResult, json_bytes
from core.channels.errors import ChannelError, PermanentChannelError, TransientChannelError
from core.store import conversations as conversation_store

if TYPE_CHECKING:
    from bot.teams.bot import ConnectorError, TeamsBot

ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
PERSON_PREFIX = "person:"
AAD_PREFIX = "aad:"
_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

# Statuses Teams uses for a momentary state: throttled, a concurrent edit (412), its gateways (502, 504).
RETRYABLE_STATUSES = frozenset({412, 429, 502, 504})


class TeamsChannelSettings(ChannelSettings):
    """Where the bot posts: a conversation it was installed in."""

    conversation: str = Field(
        default="",
        max_length=512,
        description="a stored conversation's name (Team/Channel, a chat's topic, user:NAME) or id; "
        "see `ackbot teams conversations`. Empty: every delivery must name a target.",
    )


class TeamsChannel(BaseChannel):
    """Posts and updates Adaptive Cards through the Teams bot (Bot Framework)."""

    type: ClassVar[str] = "teams"
    Settings = TeamsChannelSettings
    settings: TeamsChannelSettings
    supports_update: ClassVar[bool] = True
    # Chat is for people looking now: six attempts up to a minute apart, then the dead-letter queue and the channel's
    # health say why while someone can still act. The connector's 429s are not counted and are waited out for at
    # most fifteen minutes: a card later than that is about a state that has likely changed.
    RETRY_FOR: ClassVar[timedelta] = timedelta(minutes=15)
    MAX_ATTEMPTS: ClassVar[int | None] = 6
    BACKOFF_BASE: ClassVar[float] = 1.0
    BACKOFF_MAX: ClassVar[float] = 60.0
    # Teams' per-conversation limit for a bot: 7 messages a second (and 60 in 30 s, which retries absorb).
    RATE_PER_SECOND: ClassVar[float] = 7.0
    # Teams refuses a bot message over 40 KB, counting the whole activity, not only the card.
    MAX_MESSAGE_BYTES: ClassVar[int] = teams_cards.BOT_MESSAGE_MAX_BYTES
    # What the SDK adds around our activity (conversation, from, serviceUrl, channelId with Teams' long ids).
    ENVELOPE_BYTES: ClassVar[int] = 1024
    # The process's Teams bot, bound by bound_to() when the process is assembled.
    bot: ClassVar[TeamsBot | None] = None

    def __init__(self, name: str, settings: ChannelSettings, context: ChannelContext) -> None:
        if not isinstance(settings, TeamsChannelSettings):
            raise TypeError(f"TeamsChannel needs TeamsChannelSettings, not {type(settings).__name__}")
        super().__init__(name, settings, context)
        # Names and person targets resolved to conversation ids, so pacing keys by the real conversation.
        self._resolved: dict[str, str] = {}

    @classmethod
    def bound_to(cls, bot: TeamsBot) -> builtins.type[TeamsChannel]:
        """This class bound to the process's Teams bot (its adapter, credentials and database)."""
        return type(cls.__name__, (cls,), {"bot": bot, "__doc__": cls.__doc__})

    @property
    def label(self) -> str:
        return f"teams channel {self.name!r}"

    def _bot(self) -> TeamsBot:
        if self.bot is None:
            raise PermanentChannelError(f"{self.label}: the Teams bot is not running in this process")
        return self.bot

    def _key(self, note: Notification) -> str:
        return (note.target or "").strip() or self.settings.conversation.strip()

    def destination(self, note: Notification) -> str:
        """Pace by Teams conversation: two ackbot channels posting into one conversation share its 7 a second."""
        ref = note.extra.get("message_ref")
        if isinstance(ref, Mapping) and ref.get("conversation_id"):
            return f"teams:{ref['conversation_id']}"
        key = self._key(note)
        return f"teams:{self._resolved.get(key, key) or self.name}"

    # ---------------------------------------------------------------- where to

    def _person(self, target: str) -> str | None:
        """The Entra ID object id a target names (person:NAME, aad:ID or a bare object id), or None."""
        if target.startswith(PERSON_PREFIX):
            name = target.removeprefix(PERSON_PREFIX)
            bot = self._bot()
            person = next((p for p in bot.runtime.config.people if p.name == name), None)
            if person is None:
                raise PermanentChannelError(f"{self.label}: no person named {name!r} in the config")
            if not person.identities.teams:
                raise PermanentChannelError(
                    f"{self.label}: person {name!r} has no Teams identity (identities.teams, an Entra ID object id)"
                )
            return person.identities.teams
        if target.startswith(AAD_PREFIX):
            return target.removeprefix(AAD_PREFIX)
        if _GUID_RE.match(target):
            return target
        return None

    async def _conversation(self, note: Notification) -> conversation_store.TeamsConversation:
        """The stored conversation this delivery goes to; a person's 1:1 chat is created if need be."""
        bot = self._bot()
        key = self._key(note)
        if not key:
            raise PermanentChannelError(f"{self.label}: no conversation configured and the delivery names nobody")
        user = self._person(key)
        try:
            if user is None:
                found = await conversations.find_conversation(db=bot.runtime.db, key=key)
                if found is None:
                    raise PermanentChannelError(
                        f"{self.label}: no Teams conversation named {key!r} is known; install the ackbot app there "
                        "(or @mention it in that channel) and see `ackbot teams conversations`"
                    )
            else:
                found = await bot.personal_conversation(user)
        except conversation_store.AmbiguousConversationError as exc:
            raise PermanentChannelError(f"{self.label}: {exc}") from None
        except ChannelError:
            raise
        except Exception as exc:
            raise self._error(exc, "open the 1:1 chat") from None
        if not found.installed:
            raise PermanentChannelError(
                f"{self.label}: the bot was removed from {found.name!r} ({found.conversation_id}); install it again"
            )
        self._resolved[key] = found.conversation_id
        return found

    # ---------------------------------------------------------------- what

    def build_activity(self, note: Notification) -> dict[str, Any]:
        """The message activity: one Adaptive Card (the renderer keeps it small) and a push-notification summary."""
        renderer = self.context.renderers.get("teams") or teams_cards.render
        card = renderer(note)
        activity: dict[str, Any] = {
            "type": "message",
            "summary": note.title[:200],
            "attachments": [{"contentType": ADAPTIVE_CARD, "content": card}],
        }
        # The renderer truncates to fit; this is the final word on what goes over the wire, envelope included.
        size = len(json_bytes(activity)) + self.ENVELOPE_BYTES
        if size > self.MAX_MESSAGE_BYTES:
            raise PermanentChannelError(
                f"{self.label}: the message is {size} bytes, over the {self.MAX_MESSAGE_BYTES} bytes Teams accepts"
            )
        return activity

    # ---------------------------------------------------------------- send / update

    def _error(self, exc: BaseException, doing: str) -> ChannelError:
        from bot.teams.bot import ConnectorError, connector_error

        error: ConnectorError = exc if isinstance(exc, ConnectorError) else connector_error(exc)
        message = self.redact(f"{self.label}: could not {doing}: {error}")
        return _classify(error, message)

    async def send(self, note: Notification) -> SendResult:
        """Post the card as a new message in the conversation."""
        bot = self._bot()
        activity = self.build_activity(note)
        conversation = await self._conversation(note)
        reference = bot.conversation_reference(
            conversation_id=conversation.conversation_id,
            service_url=conversation.service_url,
            tenant_id=conversation.tenant_id,
            stored=conversation.reference,
        )
        try:
            posted = await bot.post(reference, activity)
        except Exception as exc:
            raise self._error(exc, f"post to {conversation.name!r}") from None
        return SendResult(
            message_ref={
                "conversation_id": posted.conversation_id,
                "activity_id": posted.activity_id,
                "service_url": posted.service_url,
                "tenant_id": posted.tenant_id,
            },
            status_code=201,
            detail={"conversation": conversation.name},
        )

    async def update(self, message_ref: Mapping[str, Any], note: Notification) -> SendResult:
        """Replace the card of a message posted earlier."""
        bot = self._bot()
        conversation_id = str(message_ref.get("conversation_id") or "")
        activity_id = str(message_ref.get("activity_id") or "")
        service_url = str(message_ref.get("service_url") or "")
        if not (conversation_id and activity_id and service_url):
            raise PermanentChannelError(f"{self.label}: the message reference is incomplete: {dict(message_ref)}")
        activity = self.build_activity(note)
        stored = await conversations.get_conversation(db=bot.runtime.db, conversation_id=conversation_id)
        reference = bot.conversation_reference(
            conversation_id=conversation_id,
            service_url=service_url,
            tenant_id=message_ref.get("tenant_id"),
            stored=stored.reference if stored is not None else None,
        )
        try:
            await bot.update(reference, activity_id, activity)
        except Exception as exc:
            raise self._error(exc, f"update message {activity_id}") from None
        return SendResult(message_ref=dict(message_ref), status_code=200)


def _classify(error: ConnectorError, message: str) -> ChannelError:
    """Transient for Teams' momentary statuses, 5xx and the network; permanent for the rest."""
    status = error.status
    if status is None:
        if error.network:
            return TransientChannelError(message)
        return PermanentChannelError(message)
    if status in RETRYABLE_STATUSES or status >= 500:
        return TransientChannelError(message, status_code=status, retry_after=error.retry_after)
    return PermanentChannelError(message, status_code=status)
