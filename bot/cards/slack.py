"""Slack Block Kit renderers: a Notification (or a list) in, a chat.postMessage body out.

Every function returns ``{"text": fallback, "blocks": [...]}`` and, for views with a severity, an
``attachments`` entry whose only job is the coloured bar. Output is deterministic (no wall clock) and
never exceeds Slack's documented limits: content is cut with "…" / "… and N more" rather than failing.

Event-supplied text is escaped (see :func:`escape`) before it reaches any mrkdwn field, so an alert cannot
ping a channel, hide a link or restyle the message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot.cards.common import (
    APPROVAL_STYLE,
    CONFIRM_WORDING,
    ELLIPSIS,
    NOTICE_STYLE,
    OUTCOME_STYLES,
    PENDING_OUTCOME,
    SEVERITY_STYLES,
    STATUS_EMOJI,
    Budget,
    Outcome,
    Style,
    and_more,
    choice_label,
    context_facts,
    epoch_seconds,
    fit,
    needs_confirm,
    outcome_of,
    outcome_sentence,
    plain_time,
    reference_time,
    scope_facts,
    status_of,
    style_of,
    take,
    time_left,
    truncate,
    unique_buttons,
    view_of,
)
from core.models.approvals import Approval, ApprovalState
from core.models.deliveries import DeliveryPurpose
from core.models.events import Alert, AlertStatus, Link, Scope

if TYPE_CHECKING:
    from core.channels.base import Button, Notification

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


def _url(url: str) -> str:
    """A URL made safe inside <url|text>: the characters that would end or split the link are encoded."""
    return url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")


def _date(value: datetime) -> str:
    """A timestamp every reader sees in their own timezone, with a UTC fallback for old clients."""
    return f"<!date^{epoch_seconds(value)}^{{date_short_pretty}} {{time}}|{plain_time(value)}>"


# ---------------------------------------------------------------- block builders


def defuse(text: str) -> str:
    """Event-supplied text made inert for plain_text (which shows &, < and > as they are)."""
    return _BROADCAST_RE.sub("@\u2060", _ANGLE_RE.sub("<\u2060", text))


def _plain(text: str, limit: int) -> dict[str, Any]:
    # plain_text shows no markup, so it takes raw (defused) text; it must not be empty.
    return {"type": "plain_text", "text": truncate(defuse(text.strip()), limit) or " ", "emoji": True}


def _mrkdwn(text: str, limit: int = SECTION_TEXT_MAX) -> dict[str, Any]:
    # verbatim: Slack does not auto-link bare URLs, #channels or @names found in the text.
    return {"type": "mrkdwn", "text": cut(text, limit) or " ", "verbatim": True}


def _header(text: str) -> Block:
    # A header is one line: newlines and runs of spaces from event titles collapse.
    return {"type": "header", "text": _plain(" ".join(text.split()), HEADER_TEXT_MAX)}


def _section(text: str, limit: int = SECTION_TEXT_MAX) -> Block:
    return {"type": "section", "text": _mrkdwn(text, min(limit, SECTION_TEXT_MAX))}


def _context(*texts: str) -> Block:
    elements = [_mrkdwn(t) for t in texts if t][:CONTEXT_ELEMENTS_MAX]
    return {"type": "context", "elements": elements or [_mrkdwn(" ")]}


def _field(name: str, value: str) -> dict[str, Any]:
    """One section field: an escaped name in bold over an already-formatted value."""
    return _mrkdwn(f"*{cut(escape(name), 100)}*\n{value}", FIELD_TEXT_MAX)


def _field_sections(fields: Sequence[dict[str, Any]]) -> list[Block]:
    return [
        {"type": "section", "fields": list(fields[i : i + FIELDS_PER_SECTION])}
        for i in range(0, len(fields), FIELDS_PER_SECTION)
    ]


def _fact_blocks(facts: Sequence[tuple[str, str]], budget: Budget, noun: str) -> list[Block]:
    """Facts as section fields (10 per section), with "… and N more" for those the budget leaves out."""
    shown, hidden = take(facts, budget.facts)
    blocks = _field_sections([_field(name, cut(escape(value), budget.value) or "—") for name, value in shown])
    if hidden:
        blocks.append(_context(and_more(hidden, noun)))
    return blocks


def _links_block(links: Sequence[Link], budget: Budget) -> Block | None:
    """The event's links as one context line; titles are escaped, URLs encoded so they cannot break out."""
    shown, hidden = take(links, budget.links)
    if not shown:
        return None
    parts = [f"<{_url(link.url)}|{cut(escape(link.title or link.url), 200)}>" for link in shown]
    text = "🔗 " + " · ".join(parts)
    if hidden:
        text += f" {and_more(hidden, 'links')}"
    if len(text) > SECTION_TEXT_MAX:
        # Cutting through a <url|title> would leave broken markup: fall back to a count.
        text = f"🔗 {len(links)} links"
    return _context(text)


def _confirm(button: Button, title: str) -> dict[str, Any]:
    heading, question = CONFIRM_WORDING.get(button.choice, (f"{choice_label(button)}?", "{title}"))
    dialog: dict[str, Any] = {
        "title": _plain(heading, CONFIRM_TITLE_MAX),
        "text": _plain(question.format(title=truncate(title, 150)), CONFIRM_TEXT_MAX),
        "confirm": _plain(choice_label(button), CONFIRM_BUTTON_MAX),
        "deny": _plain("Cancel", CONFIRM_BUTTON_MAX),
    }
    if button.choice == "deny":
        dialog["style"] = "danger"
    return dialog


def _button(button: Button, title: str) -> dict[str, Any] | None:
    """One choice button: action_id names the choice, value carries the signed token."""
    element: dict[str, Any] = {
        "type": "button",
        "action_id": f"ackbot.{button.choice}"[:ID_MAX],
        "text": _plain(choice_label(button), BUTTON_TEXT_MAX),
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
        element["confirm"] = _confirm(button, title)
    return element


def _actions_block(buttons: Sequence[Button], title: str) -> Block | None:
    elements = [e for e in (_button(b, title) for b in unique_buttons(buttons)) if e is not None]
    if not elements:
        return None
    return {"type": "actions", "block_id": ACTIONS_BLOCK_ID, "elements": elements[:ACTIONS_ELEMENTS_MAX]}


def _message(fallback: str, blocks: list[Block], style: Style | None = None, footer: str = "") -> Message:
    """Assemble the message: fallback text, blocks capped at MAX_BLOCKS, and the coloured bar if any."""
    if len(blocks) > MAX_BLOCKS:
        # Keep the buttons: they are the point of the message.
        tail = [blocks[-1]] if blocks[-1].get("type") == "actions" else []
        room = MAX_BLOCKS - 1 - len(tail)
        hidden = len(blocks) - len(tail) - room
        blocks = [*blocks[:room], _context(and_more(hidden, "blocks")), *tail]
    message: Message = {"text": cut(fallback, FALLBACK_TEXT_MAX) or " ", "blocks": blocks}
    if style is not None:
        # Block Kit has no colour of its own: a legacy attachment carrying one context block draws the bar.
        message["attachments"] = [{"color": style.hex, "blocks": [_context(footer or f"{style.emoji} {style.label}")]}]
    return message


def message_text_size(message: Mapping[str, Any]) -> int:
    """Characters of text the message carries, everywhere Slack counts it."""
    total = 0

    def walk(node: Any) -> None:
        nonlocal total
        if isinstance(node, Mapping):
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


def _fit(build: Callable[[Budget], Message]) -> Message:
    return fit(build, message_text_size, MESSAGE_TEXT_MAX, LADDER)


# ---------------------------------------------------------------- pieces of the notification views


def _scope(note: Notification) -> Scope | None:
    if note.alert is not None:
        return note.alert.scope
    if note.event is not None:
        return note.event.scope
    return None


def _links(note: Notification) -> list[Link]:
    if note.alert is not None and note.alert.links:
        return note.alert.links
    if note.event is not None:
        return note.event.links
    return []


def _subject_blocks(note: Notification, budget: Budget) -> list[Block]:
    """What a notification is about: summary, scope / labels or approval context, links, suppressed count."""
    blocks: list[Block] = []
    if note.summary.strip():
        blocks.append(_section(escape(note.summary.strip()), budget.text))
    approval = note.approval
    if approval is not None:
        people: list[dict[str, Any]] = []
        if approval.requester:
            people.append(_field("Requested by", cut(escape(approval.requester), budget.value)))
        if approval.approvers:
            people.append(_field("Approvers", cut(escape(", ".join(approval.approvers)), budget.value)))
        if approval.quorum > 1:
            people.append(_field("Quorum", f"{approval.quorum} approvals"))
        blocks.extend(_field_sections(people))
        blocks.extend(_fact_blocks(context_facts(approval.context), budget, "details"))
    scope = _scope(note)
    if scope is not None:
        blocks.extend(_fact_blocks(scope_facts(scope), budget, "labels"))
    links = _links_block(_links(note), budget)
    if links is not None:
        blocks.append(links)
    if note.suppressed_count > 0 and note.extra.get("suppressed_text"):
        # Worded by ingest with the throttle window: "14 similar suppressed in the last hour".
        blocks.append(_context(f"🔕 {escape(note.suppressed_text)}"))
    elif note.suppressed_count > 0:
        noun = "notification" if note.suppressed_count == 1 else "notifications"
        blocks.append(_context(f"🔕 {note.suppressed_count} similar {noun} suppressed"))
    return blocks


def _alert_footer(note: Notification, style: Style) -> str:
    parts = [f"{style.emoji} *{style.label}*"]
    status = status_of(note)
    if status:
        parts.append(f"{STATUS_EMOJI.get(status, '')} {status}".strip())
    alert = note.alert
    if alert is not None:
        parts.append(escape(alert.kind))
        if alert.event_count > 1:
            parts.append(f"{alert.event_count} events since {_date(alert.first_seen)}")
        else:
            parts.append(f"since {_date(alert.first_seen)}")
    elif note.event is not None:
        parts.append(escape(note.event.kind))
        parts.append(_date(note.event.ts))
    return " · ".join(parts)


def _fallback(prefix: str, title: str) -> str:
    return f"{prefix} {escape(title)}"


# ---------------------------------------------------------------- notification views


def render_alert(note: Notification) -> Message:
    """An alert (or plain notice) with severity, summary, scope, links and the choice buttons."""
    style = style_of(note)

    def build(budget: Budget) -> Message:
        blocks = [_header(f"{style.emoji} {note.title}"), *_subject_blocks(note, budget)]
        actions = _actions_block(note.buttons, note.title)
        if actions is not None:
            blocks.append(actions)
        prefix = f"{style.emoji} [{style.label}]" if style is not NOTICE_STYLE else style.emoji
        status = status_of(note)
        if status and status != "firing":
            prefix += f" ({status})"
        return _message(_fallback(prefix, note.title), blocks, style, _alert_footer(note, style))

    return _fit(build)


def render_approval(note: Notification) -> Message:
    """An approval request: requester, approvers, context, time left and the choice buttons."""
    approval = note.approval
    if approval is None:
        return render_alert(note)
    style = style_of(note) if note.alert is not None else APPROVAL_STYLE
    now = reference_time(note)
    left = time_left(approval.expires_at, now)

    def build(budget: Budget) -> Message:
        blocks = [_header(f"{style.emoji} {note.title}")]
        blocks.append(_section(f"*Approval requested* · ⏳ {_date(approval.expires_at)} ({left})"))
        if approval.state is ApprovalState.escalated:
            who = f" by {cut(escape(approval.decided_by), 200)}" if approval.decided_by else ""
            blocks.append(_context(f"⏫ Escalated{who} · level {approval.escalation_level}"))
        blocks.extend(_subject_blocks(note, budget))
        actions = _actions_block(note.buttons, note.title)
        if actions is not None:
            blocks.append(actions)
        footer_parts = [f"{style.emoji} *{style.label}*"]
        if approval.rule:
            footer_parts.append(f"rule {escape(approval.rule)}")
        fallback = _fallback(f"{APPROVAL_STYLE.emoji} Approval requested:", note.title)
        return _message(fallback, blocks, style, " · ".join(footer_parts))

    return _fit(build)


def _bold(text: str) -> str:
    return f"*{text}*"


def _outcome_line(outcome: Outcome) -> str:
    sentence = outcome_sentence(outcome, escape, _bold)
    if outcome.at is not None:
        sentence += f" · {_date(outcome.at)}"
    return f"{outcome.style.emoji} {sentence}"


def render_decided(note: Notification) -> Message:
    """The final state of an approval or alert: who decided what, and when; no buttons."""
    # Nothing decided yet: show it as pending rather than fail.
    decided = outcome_of(note) or PENDING_OUTCOME

    def build(budget: Budget) -> Message:
        blocks = [_header(f"{decided.style.emoji} {note.title}"), _section(_outcome_line(decided))]
        blocks.extend(_subject_blocks(note, budget))
        fallback = _fallback(f"{decided.style.emoji} {outcome_sentence(decided, escape, str)}:", note.title)
        footer = f"{decided.style.emoji} *{decided.style.label}*"
        severity = style_of(note)
        if severity is not APPROVAL_STYLE and severity is not NOTICE_STYLE:
            footer += f" · was {severity.emoji} {severity.label}"
        return _message(fallback, blocks, decided.style, footer)

    return _fit(build)


def render(note: Notification) -> Message:
    """The right view for a notification: digest, report, decided, approval request or alert."""
    if note.purpose is DeliveryPurpose.digest and "digest" in note.extra:
        return render_digest_note(note)
    if note.purpose is DeliveryPurpose.report and "report" in note.extra:
        return render_report(note)
    view = view_of(note)
    if view == "decided":
        return render_decided(note)
    if view == "approval":
        return render_approval(note)
    return render_alert(note)


# ---------------------------------------------------------------- lists and replies


def _rows_blocks(rows: Sequence[str], total: int, noun: str) -> list[Block]:
    """List rows packed into as few sections as fit 3000 characters, and "… and N more" of total."""
    blocks: list[Block] = []
    current: list[str] = []
    size = 0
    for row in rows:
        row = cut(row, SECTION_TEXT_MAX)
        if current and size + 1 + len(row) > SECTION_TEXT_MAX:
            blocks.append(_section("\n".join(current)))
            current, size = [], 0
        current.append(row)
        size += len(row) + (1 if size else 0)
    if current:
        blocks.append(_section("\n".join(current)))
    hidden = total - len(rows)
    if hidden > 0:
        blocks.append(_context(and_more(hidden, noun)))
    return blocks


def _alert_row(alert: Alert) -> str:
    style = SEVERITY_STYLES[alert.severity]
    status = {AlertStatus.open: "firing", AlertStatus.acknowledged: "acknowledged", AlertStatus.resolved: "resolved"}[
        alert.status
    ]
    parts = [
        f"{style.emoji} *{cut(escape(alert.title), ROW_TITLE_MAX)}*",
        f"{STATUS_EMOJI[status]} {status}",
    ]
    parts.extend(cut(escape(p), 80) for p in (alert.scope.namespace, alert.scope.repo) if p)
    parts.append(f"last {_date(alert.last_seen)}")
    parts.append(cut(escape(alert.id), 60))
    return " · ".join(parts)


def _approval_row(approval: Approval) -> str:
    if approval.state is ApprovalState.pending:
        emoji, state = "⏳", "pending"
    else:
        outcome = OUTCOME_STYLES[approval.state.value]
        emoji, state = outcome.emoji, outcome.label.lower()
    parts = [f"{emoji} *{cut(escape(approval.title), ROW_TITLE_MAX)}*", state]
    if approval.requester:
        parts.append(f"by {cut(escape(approval.requester), 60)}")
    if approval.state in (ApprovalState.pending, ApprovalState.escalated):
        parts.append(f"expires {_date(approval.expires_at)}")
    parts.append(cut(escape(approval.id), 60))
    return " · ".join(parts)


def render_digest(title: str, groups: dict[str, int], items: list[Alert], total: int, link: str | None) -> Message:
    """A digest: how many alerts per group, the most relevant ones, and a link to all of them."""
    ordered = sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))
    count = max(total, len(items))

    def build(budget: Budget) -> Message:
        noun = "alert" if count == 1 else "alerts"
        blocks: list[Block] = [_header(f"📬 {title}"), _section(f"*{count}* {noun} in this digest")]
        shown_groups, hidden_groups = take(ordered, budget.facts)
        blocks.extend(_field_sections([_field(name, str(n)) for name, n in shown_groups]))
        if hidden_groups:
            blocks.append(_context(and_more(hidden_groups, "groups")))
        if items:
            blocks.append({"type": "divider"})
            shown, _ = take(items, budget.items)
            blocks.extend(_rows_blocks([_alert_row(a) for a in shown], count, "alerts"))
        if link and len(link) <= BUTTON_URL_MAX:
            button = {
                "type": "button",
                "action_id": "ackbot.open_digest",
                "text": _plain("Open in ackbot", BUTTON_TEXT_MAX),
                "url": link,
            }
            blocks.append({"type": "actions", "elements": [button]})
        return _message(f"📬 {escape(title)}: {count} {noun}", blocks)

    return _fit(build)


def render_digest_note(note: Notification) -> Message:
    """A digest delivery (content in note.extra["digest"]) as render_digest shows it."""
    digest = note.extra["digest"]
    items = [Alert.model_validate({k: v for k, v in a.items() if k != "digest_events"}) for a in digest["items"]]
    return render_digest(note.title, dict(digest["groups"]), items, int(digest["total"]), digest.get("link"))


def _expiring_row(item: Mapping[str, Any]) -> str:
    alert = item["alert"]
    when = "⛔ expired" if item["expired"] else f"⏳ in {item['days_left']} days"
    title = cut(escape(str(alert["title"])), ROW_TITLE_MAX)
    return f"{when} · *{title}* · {escape(str(item['expires_at']))} · {cut(escape(str(alert['id'])), 60)}"


def render_report(note: Notification) -> Message:
    """The scheduled report (note.extra["report"]): open alerts, pending approvals, what expires soon."""
    report = note.extra["report"]
    open_alerts, approvals, expiring = report["open_alerts"], report["pending_approvals"], report["expiring"]
    alerts = [Alert.model_validate(a) for a in open_alerts["items"]]

    def build(budget: Budget) -> Message:
        blocks: list[Block] = [_header(f"📋 {note.title}")]
        blocks.append(_section(f"*Open alerts: {open_alerts['total']}*"))
        counts = [_field(severity, str(count)) for severity, count in open_alerts["by_severity"].items()]
        blocks.extend(_field_sections(counts))
        shown, _ = take(alerts, budget.items // 3)
        if shown:
            blocks.extend(_rows_blocks([_alert_row(a) for a in shown], open_alerts["total"], "alerts"))
        blocks.append({"type": "divider"})
        if approvals["available"]:
            blocks.append(_section(f"*Pending approvals: {approvals['total']}*"))
            pending = [Approval.model_validate(a) for a in approvals["items"]]
            shown_approvals, _ = take(pending, budget.items // 3)
            if shown_approvals:
                rows = [_approval_row(a) for a in shown_approvals]
                blocks.extend(_rows_blocks(rows, approvals["total"], "approvals"))
        else:
            blocks.append(_context(f"Pending approvals not included: {escape(str(approvals['note']))}"))
        blocks.append({"type": "divider"})
        blocks.append(_section(f"*Expiring within {expiring['within_days']} days: {expiring['total']}*"))
        shown_expiring, _ = take(expiring["items"], budget.items // 3)
        if shown_expiring:
            blocks.extend(_rows_blocks([_expiring_row(i) for i in shown_expiring], expiring["total"], "items"))
        link = report.get("link")
        if link and len(link) <= BUTTON_URL_MAX:
            button = {
                "type": "button",
                "action_id": "ackbot.open_report",
                "text": _plain("Open alerts in ackbot", BUTTON_TEXT_MAX),
                "url": link,
            }
            blocks.append({"type": "actions", "elements": [button]})
        fallback = (
            f"📋 {escape(note.title)}: {open_alerts['total']} open alerts, "
            f"{expiring['total']} expiring within {expiring['within_days']} days"
        )
        return _message(fallback, blocks[:MAX_BLOCKS])

    return _fit(build)


def render_alert_list(alerts: list[Alert], title: str) -> Message:
    """A list of alerts, one line each, for slash-command replies."""

    def build(budget: Budget) -> Message:
        blocks: list[Block] = [_header(title)]
        if not alerts:
            blocks.append(_section("No alerts."))
        else:
            shown, _ = take(alerts, budget.items)
            blocks.extend(_rows_blocks([_alert_row(a) for a in shown], len(alerts), "alerts"))
        return _message(f"{escape(title)}: {len(alerts)} alerts", blocks)

    return _fit(build)


def render_approval_list(approvals: list[Approval]) -> Message:
    """A list of approvals, one line each, for slash-command replies."""
    title = "Approvals"

    def build(budget: Budget) -> Message:
        blocks: list[Block] = [_header(f"🙋 {title}")]
        if not approvals:
            blocks.append(_section("No approvals waiting."))
        else:
            shown, _ = take(approvals, budget.items)
            blocks.extend(_rows_blocks([_approval_row(a) for a in shown], len(approvals), "approvals"))
        return _message(f"{title}: {len(approvals)}", blocks)

    return _fit(build)


def render_text(text: str) -> Message:
    """A plain reply; the text is escaped, since replies often echo what a user typed."""
    raw = text.strip() or " "

    def build(budget: Budget) -> Message:
        # Split the raw text, then escape each piece, so no entity is torn in two across sections.
        # Escaping can lengthen a piece; a piece of a third of the limit leaves room for that.
        piece = SECTION_TEXT_MAX // 3
        shown = raw[: budget.text * 10]
        blocks = [_section(escape(shown[i : i + piece])) for i in range(0, len(shown), piece)]
        if len(shown) < len(raw):
            blocks.append(_context(and_more(len(raw) - len(shown), "characters")))
        return _message(escape(raw), blocks)

    return _fit(build)
