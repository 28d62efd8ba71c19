"""Slack Block Kit's building blocks: its documented limits, escaping of event-supplied text, and the block
builders every view in bot/cards/slack.py is made of. Pure functions; nothing here is cut silently past a limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot.cards.common import (
    CONFIRM_WORDING,
    ELLIPSIS,
    Budget,
    Style,
    and_more,
    choice_label,
    epoch_seconds,
    fit,
    needs_confirm,
    plain_time,
    take,
    truncate,
    unique_buttons,
)
from core.models.events import Link

if TYPE_CHECKING:
    from core.channels.base import Button

Block = dict[str, Any]
Message = dict[str, Any]


# ---------------------------------------------------------------- Slack's limits (api.slack.com/reference/block-kit)

# A message carries at most 50 blocks; more is rejected with invalid_blocks.
MAX_BLOCKS = 50
# A section's text object holds at most 3000 characters.
SECTION_TEXT_MAX = 3000
# A header block's plain_text holds at most 150 characters.
HEADER_TEXT_MAX = 150
# A section holds at most 10 fields...
FIELDS_PER_SECTION = 10
# ...of at most 2000 characters each.
FIELD_TEXT_MAX = 2000
# A context block holds at most 10 elements; each mrkdwn element is a text object (3000 characters).
CONTEXT_ELEMENTS_MAX = 10
# An actions block holds at most 25 elements.
ACTIONS_ELEMENTS_MAX = 25
# A button's value (our ack token) travels back in block_actions: at most 2000 characters.
BUTTON_VALUE_MAX = 2000
# A button's label: at most 75 characters.
BUTTON_TEXT_MAX = 75
# A button's url: at most 3000 characters.
BUTTON_URL_MAX = 3000
# action_id and block_id: at most 255 characters.
ID_MAX = 255
# The confirm dialog: title 100, text 300, confirm / deny button labels 30 characters each.
CONFIRM_TITLE_MAX = 100
CONFIRM_TEXT_MAX = 300
CONFIRM_BUTTON_MAX = 30
# Slack truncates a message whose text exceeds 40000 characters; we hold every text in the message to that.
MESSAGE_TEXT_MAX = 40_000
# The top-level text is the notification preview and the screen-reader fallback: keep it short.
FALLBACK_TEXT_MAX = 3000

# Our own choices on the content side, tried from generous to tight until the message fits MESSAGE_TEXT_MAX.
LADDER: tuple[Budget, ...] = (
    Budget(text=SECTION_TEXT_MAX, facts=30, value=500, items=100, links=10),
    Budget(text=2000, facts=20, value=200, items=60, links=5),
    Budget(text=1000, facts=10, value=100, items=30, links=3),
    Budget(text=300, facts=4, value=60, items=10, links=1),
)
# A title inside a list row: enough to recognise it, short enough to keep rows on one line.
ROW_TITLE_MAX = 120
# The block that carries the choice buttons: handlers find the buttons by this id.
ACTIONS_BLOCK_ID = "ackbot.choices"

# ---------------------------------------------------------------- escaping

# "@here" and friends are only parsed with link_names, and our text objects are verbatim, but a word
# joiner after the "@" makes sure no setting or client ever turns event text into a broadcast.
_BROADCAST_RE = re.compile(r"@(?=(?:here|channel|everyone)\b)", re.IGNORECASE)
# mrkdwn formatting markers become look-alike characters: mrkdwn has no escape character.
# (asterisk operator, tilde operator, modifier letter grave accent; written as escapes to stay unambiguous).
_MARKERS = str.maketrans({"*": "\u2217", "~": "\u223c", "`": "\u02cb"})
# An underscore styles text only at a word's edge, so snake_case identifiers stay as they are.
_EDGE_UNDERSCORE_RE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")
# A line starting with ">" is a block quote even when written as the entity; a soft hyphen breaks that.
_QUOTE_RE = re.compile(r"^(\s*)&gt;", re.MULTILINE)
# plain_text is not parsed for mentions or links, but a word joiner after "<" makes sure that no client or future
# parser turns event text such as "<!channel>", "<@U123>" or "<https://evil|click>" into markup.
_ANGLE_RE = re.compile(r"<(?=[!@#]|[a-z][a-z0-9+.-]*:)", re.IGNORECASE)
# A cut must not leave half an entity ("&am") behind.
_PARTIAL_ENTITY_RE = re.compile(r"&[a-z]{0,3}$")


def escape(text: str) -> str:
    """Event-supplied text made inert for mrkdwn: no mentions, links, dates or formatting survive."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _BROADCAST_RE.sub("@\u2060", text)
    text = text.translate(_MARKERS)
    text = _EDGE_UNDERSCORE_RE.sub("\u02cd", text)  # modifier letter low macron
    return _QUOTE_RE.sub("\\1\u00ad&gt;", text)


def cut(text: str, limit: int) -> str:
    """Already-escaped mrkdwn cut to limit characters without splitting an entity."""
    if len(text) <= limit:
        return text
    if limit <= 0:
        return ""
    head = _PARTIAL_ENTITY_RE.sub("", text[: limit - 1]).rstrip()
    return head + ELLIPSIS


def url_text(url: str) -> str:
    """A URL made safe inside <url|text>: the characters that would end or split the link are encoded."""
    return url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")


def date_text(value: datetime) -> str:
    """A timestamp every reader sees in their own timezone, with a UTC fallback for old clients."""
    return f"<!date^{epoch_seconds(value)}^{{date_short_pretty}} {{time}}|{plain_time(value)}>"


# ---------------------------------------------------------------- block builders


def defuse(text: str) -> str:
    """Event-supplied text made inert for plain_text (which shows &, < and > as they are)."""
    return _BROADCAST_RE.sub("@\u2060", _ANGLE_RE.sub("<\u2060", text))


def plain(text: str, limit: int) -> dict[str, Any]:
    # plain_text shows no markup, so it takes raw (defused) text; it must not be empty.
    return {"type": "plain_text", "text": truncate(defuse(text.strip()), limit) or " ", "emoji": True}


def mrkdwn(text: str, limit: int = SECTION_TEXT_MAX) -> dict[str, Any]:
    # verbatim: Slack does not auto-link bare URLs, #channels or @names found in the text.
    return {"type": "mrkdwn", "text": cut(text, limit) or " ", "verbatim": True}


def header(text: str) -> Block:
    # A header is one line: newlines and runs of spaces from event titles collapse.
    return {"type": "header", "text": plain(" ".join(text.split()), HEADER_TEXT_MAX)}


def section(text: str, limit: int = SECTION_TEXT_MAX) -> Block:
    return {"type": "section", "text": mrkdwn(text, min(limit, SECTION_TEXT_MAX))}


def context(*texts: str) -> Block:
    elements = [mrkdwn(t) for t in texts if t][:CONTEXT_ELEMENTS_MAX]
    return {"type": "context", "elements": elements or [mrkdwn(" ")]}


def field(name: str, value: str) -> dict[str, Any]:
    """One section field: an escaped name in bold over an already-formatted value."""
    return mrkdwn(f"*{cut(escape(name), 100)}*\n{value}", FIELD_TEXT_MAX)


def field_sections(fields: Sequence[dict[str, Any]]) -> list[Block]:
    return [
        {"type": "section", "fields": list(fields[i : i + FIELDS_PER_SECTION])}
        for i in range(0, len(fields), FIELDS_PER_SECTION)
    ]


def fact_blocks(facts: Sequence[tuple[str, str]], budget: Budget, noun: str) -> list[Block]:
    """Facts as section fields (10 per section), with "… and N more" for those the budget leaves out."""
    shown, hidden = take(facts, budget.facts)
    blocks = field_sections([field(name, cut(escape(value), budget.value) or "—") for name, value in shown])
    if hidden:
        blocks.append(context(and_more(hidden, noun)))
    return blocks


def links_block(links: Sequence[Link], budget: Budget) -> Block | None:
    """The event's links as one context line; titles are escaped, URLs encoded so they cannot break out."""
    shown, hidden = take(links, budget.links)
    if not shown:
        return None
    parts = [f"<{url_text(link.url)}|{cut(escape(link.title or link.url), 200)}>" for link in shown]
    text = "🔗 " + " · ".join(parts)
    if hidden:
        text += f" {and_more(hidden, 'links')}"
    if len(text) > SECTION_TEXT_MAX:
        # Cutting through a <url|title> would leave broken markup: fall back to a count.
        text = f"🔗 {len(links)} links"
    return context(text)


def confirm(button: Button, title: str) -> dict[str, Any]:
    heading, question = CONFIRM_WORDING.get(button.choice, (f"{choice_label(button)}?", "{title}"))
    dialog: dict[str, Any] = {
        "title": plain(heading, CONFIRM_TITLE_MAX),
        "text": plain(question.format(title=truncate(title, 150)), CONFIRM_TEXT_MAX),
        "confirm": plain(choice_label(button), CONFIRM_BUTTON_MAX),
        "deny": plain("Cancel", CONFIRM_BUTTON_MAX),
    }
    if button.choice == "deny":
        dialog["style"] = "danger"
    return dialog


def button(button: Button, title: str) -> dict[str, Any] | None:
    """One choice button: action_id names the choice, value carries the signed token."""
    element: dict[str, Any] = {
        "type": "button",
        "action_id": f"ackbot.{button.choice}"[:ID_MAX],
        "text": plain(choice_label(button), BUTTON_TEXT_MAX),
    }
    if len(button.token) <= BUTTON_VALUE_MAX:
        element["value"] = button.token
    elif button.url and len(button.url) <= BUTTON_URL_MAX:
        # A token cut short is worthless: send the clicker to the web ack page instead. A distinct action_id
        # keeps the decision handler from treating this click (which carries no token) as a decision.
        element["action_id"] = f"ackbot.open.{button.choice}"[:ID_MAX]
        element["url"] = button.url
    else:
        return None
    if button.choice == "acknowledge":
        element["style"] = "primary"
    elif button.choice == "deny":
        element["style"] = "danger"
    if needs_confirm(button) and "value" in element:
        element["confirm"] = confirm(button, title)
    return element


def actions_block(buttons: Sequence[Button], title: str) -> Block | None:
    elements = [e for e in (button(b, title) for b in unique_buttons(buttons)) if e is not None]
    if not elements:
        return None
    return {"type": "actions", "block_id": ACTIONS_BLOCK_ID, "elements": elements[:ACTIONS_ELEMENTS_MAX]}


def message(fallback: str, blocks: list[Block], style: Style | None = None, footer: str = "") -> Message:
    """Assemble the message: fallback text, blocks capped at MAX_BLOCKS, and the coloured bar if any."""
    if len(blocks) > MAX_BLOCKS:
        # Keep the buttons: they are the point of the message.
        tail = [blocks[-1]] if blocks[-1].get("type") == "actions" else []
        room = MAX_BLOCKS - 1 - len(tail)
        hidden = len(blocks) - len(tail) - room
        blocks = [*blocks[:room], context(and_more(hidden, "blocks")), *tail]
    message: Message = {"text": cut(fallback, FALLBACK_TEXT_MAX) or " ", "blocks": blocks}
    if style is not None:
        # Block Kit has no colour of its own: a legacy attachment carrying one context block draws the bar.
        message["attachments"] = [{"color": style.hex, "blocks": [context(footer or f"{style.emoji} {style.label}")]}]
    return message


def message_text_size(message: Mapping[str, Any]) -> int:
    """Characters of text the message carries, everywhere Slack counts it."""
    total = 0

    def walk(node: Any) -> None:
        nonlocal total
        # Messages are plain dicts and lists (JSON): dict rather than Mapping spares an ABC check per node.
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "text" and isinstance(value, str):
                    total += len(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message)
    return total


def fit_message(build: Callable[[Budget], Message]) -> Message:
    return fit(build, message_text_size, MESSAGE_TEXT_MAX, LADDER)
