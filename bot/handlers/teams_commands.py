"""Text commands to the Teams bot (a 1:1 chat, or an @mention in a channel), answered with Adaptive Cards.

The command language lives in core.chatops, shared with Slack's slash command; this module renders its answers.
"""

from __future__ import annotations

from typing import Any

from bot.cards import teams as teams_cards
from bot.handlers.teams_actions import current_note, render
from core import chatops
from core.models.people import Actor
from core.runtime import Runtime

Card = dict[str, Any]

# (command, what it does) for the Teams app manifest's command list.
COMMANDS: tuple[tuple[str, str], ...] = tuple(
    (command.name, f"{command.description[0].upper()}{command.description[1:]}: {command.usage()}")
    for command in chatops.COMMANDS
)
MENTION_HINT = "In a channel, @mention ackbot first: @ackbot pending"


async def render_answer(runtime: Runtime, answer: chatops.Answer) -> Card:
    """An answer of the command language as a card."""
    if answer.decided is not None:
        note = await current_note(runtime, approval=answer.decided)
        if note is not None:
            return render(runtime, note)
    if answer.alerts is not None:
        return teams_cards.render_alert_list(answer.alerts, answer.title)
    if answer.approvals is not None:
        return teams_cards.render_approval_list(answer.approvals)
    text = answer.text
    if text.startswith(chatops.help_text()) or "\n" + chatops.help_text() in text:
        text += "\n" + MENTION_HINT
    return teams_cards.render_text(text)


async def run(runtime: Runtime, actor: Actor, text: str) -> Card:
    """Parse and run one command line; anything not understood gets the help."""
    return await render_answer(runtime, await chatops.run(runtime=runtime, actor=actor, text=text))
