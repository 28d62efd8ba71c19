"""The slash command (/ackbot by default): list, pending, ack, silence, test, status, help.

The command language lives in core.chatops, shared with Teams; this module renders its answers as Block Kit.
Replies are ephemeral (only the caller sees them) unless the caller adds ``--public``. The command is acknowledged
at once and answered through the response_url, so slow work never runs into Slack's 3 seconds.
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
from core import chatops
from core.models.people import Actor
from core.runtime import Runtime

log = logging.getLogger("ackbot.slack")

USAGE_HINT = " | ".join(command.usage() for command in chatops.COMMANDS)
PUBLIC_FLAG = "--public"


def help_text(command: str) -> str:
    """What the command can do, as the reply to `help` and to anything it does not understand."""
    return "\n".join(
        [chatops.help_text(command), f"Replies are visible only to you; add {PUBLIC_FLAG} to show one to the channel."]
    )


@dataclass(frozen=True)
class Reply:
    """A rendered answer and whether the whole channel sees it."""

    message: dict[str, Any]
    public: bool = False


async def render_answer(runtime: Runtime, answer: chatops.Answer, command: str) -> dict[str, Any]:
    """An answer of the command language as a Block Kit message."""
    if answer.decided is not None:
        return await decided_message(runtime, answer.decided)
    if answer.alerts is not None:
        return slack_cards.render_alert_list(answer.alerts, answer.title)
    if answer.approvals is not None:
        return slack_cards.render_approval_list(answer.approvals)
    text = answer.text
    if chatops.help_text(command) in text:
        text = text.replace(chatops.help_text(command), help_text(command))
    return slack_cards.render_text(text)


async def run(runtime: Runtime, actor: Actor, text: str, command: str) -> Reply:
    """Parse and run one command line; anything not understood gets the help."""
    words = text.split()
    public = PUBLIC_FLAG in words
    line = " ".join(w for w in words if w != PUBLIC_FLAG)
    answer = await chatops.run(runtime=runtime, actor=actor, text=line, prefix=command)
    return Reply(await render_answer(runtime, answer, command), public)


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
            reply = Reply(slack_cards.render_text("Something went wrong; the error is in ackbot's log."))
        try:
            await respond(response_type="in_channel" if reply.public else "ephemeral", **reply.message)
        except Exception:
            log.exception("could not answer %s through the response_url", command)

    bolt.command(command)(on_command)
