"""Microsoft Teams renderers: Adaptive Cards 1.5 with Universal Actions (Action.Execute).

Each view returns the card itself (a dict); the Teams channel wraps it in an attachment, and the
Workflows-webhook channel uses :func:`wrap_for_workflows`. Cards carry ``refresh`` so a person opening the
conversation later is shown the current state, and choice buttons fall back to ``Action.Submit`` on clients
older than 1.5. Every card is kept within ``max_bytes`` serialized by cutting content ("… and N more").

Event-supplied text is escaped (see :func:`escape`) so it cannot add links or markdown styling.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bot.cards.common import (
    APPROVAL_STYLE,
    CONFIRM_WORDING,
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
    fit,
    iso_time,
    json_size,
    needs_confirm,
    outcome_of,
    outcome_sentence,
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

Card = dict[str, Any]
Element = dict[str, Any]

SCHEMA_URL = "http://adaptivecards.io/schemas/adaptive-card.json"
# Action.Execute and refresh (Universal Actions) need 1.5 in Teams; older clients use the Action.Submit fallback.
CARD_VERSION = "1.5"

# ---------------------------------------------------------------- Teams' limits

# Teams rejects a bot message over 40 KB, counting the whole activity...
BOT_MESSAGE_MAX_BYTES = 40 * 1024
# ...of which the envelope around the card (ids, conversation, service URL, attachment wrapper) takes up to ~2 KB.
ACTIVITY_ENVELOPE_BYTES = 2 * 1024
# So a card sent by the bot stays within this.
DEFAULT_MAX_BYTES = BOT_MESSAGE_MAX_BYTES - ACTIVITY_ENVELOPE_BYTES
# A Workflows (Power Automate) incoming webhook accepts at most 28 KB per request...
WORKFLOWS_MAX_BYTES = 28 * 1024
# ...including the message wrapper of wrap_for_workflows: the Workflows channel passes this as max_bytes.
WORKFLOWS_CARD_MAX_BYTES = WORKFLOWS_MAX_BYTES - 512

# Content budgets, tried from generous to tight until the card fits max_bytes.
LADDER: tuple[Budget, ...] = (
    Budget(text=10_000, facts=30, value=500, items=100, links=6),
    Budget(text=4000, facts=20, value=200, items=50, links=4),
    Budget(text=1500, facts=10, value=100, items=25, links=2),
    Budget(text=400, facts=4, value=60, items=10, links=1),
    Budget(text=0, facts=0, value=40, items=0, links=0),
)
# A title: Teams wraps it, but nobody reads a 10 KB heading.
TITLE_MAX = 300
# A fact's name.
FACT_TITLE_MAX = 100
# A title inside a list row.
ROW_TITLE_MAX = 120
# The text on a button.
ACTION_TITLE_MAX = 75

# ---------------------------------------------------------------- escaping

# Markdown characters that can style text or make a link: backslash-escaped (CommonMark, which Teams follows).
_SPECIAL_RE = re.compile(r"([\\*\[\]`~])")
# An underscore styles text only at a word's edge, so snake_case identifiers are left alone.
_EDGE_UNDERSCORE_RE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")
# Lists ("- ", "+ ", "1. ", "1) "), quotes (">") and headings ("# ") are recognised at the start of a line;
# the marker's punctuation gets the backslash. Dates such as "2024-05-01" at a line start are left alone.
_LINE_START_RE = re.compile(r"^(\s*\d*)([.)](?=\s)|[-+](?=\s)|[>#])", re.MULTILINE)


def escape(text: str) -> str:
    """Event-supplied text made inert for Adaptive Card markdown: no links, emphasis, lists or quotes."""
    text = _SPECIAL_RE.sub(r"\\\1", text)
    text = _EDGE_UNDERSCORE_RE.sub(r"\\_", text)
    return _LINE_START_RE.sub(r"\1\\\2", text)


def _paragraphs(text: str) -> str:
    # TextBlock markdown needs a blank line for a line break; single newlines would run lines together.
    return "\n\n".join(line.rstrip() for line in text.splitlines() if line.strip())


def _date(value: datetime) -> str:
    """A timestamp that Teams shows in the reader's own timezone and locale."""
    iso = iso_time(value)
    return f"{{{{DATE({iso}, SHORT)}}}} {{{{TIME({iso})}}}}"


# ---------------------------------------------------------------- element builders


def _text(text: str, **props: Any) -> Element:
    return {"type": "TextBlock", "text": text or " ", "wrap": True, **props}


def _subtle(text: str) -> Element:
    return _text(text, isSubtle=True, size="Small", spacing="Small")


def _banner(style: Style, line: str, title: str) -> Element:
    """The coloured top of a card: a status line in the severity's colour over the title."""
    return {
        "type": "Container",
        "style": style.container,
        "bleed": True,
        "items": [
            _text(line, color=style.color, weight="Bolder", size="Small"),
            _text(escape(truncate(" ".join(title.split()), TITLE_MAX)), size="Large", weight="Bolder", style="heading"),
        ],
    }


def _facts(facts: Sequence[tuple[str, str]], budget: Budget, noun: str) -> list[Element]:
    """Facts as a FactSet, with "… and N more" for those the budget leaves out."""
    shown, hidden = take(facts, budget.facts)
    elements: list[Element] = []
    if shown:
        elements.append(
            {
                "type": "FactSet",
                "facts": [
                    {
                        "title": escape(truncate(name, FACT_TITLE_MAX)),
                        "value": escape(truncate(value, budget.value)) or "—",
                    }
                    for name, value in shown
                ],
            }
        )
    if hidden:
        elements.append(_subtle(and_more(hidden, noun)))
    return elements


def _links_set(links: Sequence[Link], budget: Budget) -> list[Element]:
    shown, hidden = take(links, budget.links)
    elements: list[Element] = []
    if shown:
        actions = [
            {"type": "Action.OpenUrl", "title": truncate(link.title or link.url, ACTION_TITLE_MAX), "url": link.url}
            for link in shown
        ]
        elements.append({"type": "ActionSet", "actions": actions})
    if hidden:
        elements.append(_subtle(and_more(hidden, "links")))
    return elements


def _action(button: Button, title: str, link_buttons: bool) -> Element:
    """One choice button: Action.Execute (verb = the choice) with an Action.Submit fallback, or a web link."""
    label = truncate(choice_label(button), ACTION_TITLE_MAX)
    if link_buttons:
        return {"type": "Action.OpenUrl", "id": f"ackbot.{button.choice}", "title": label, "url": button.url}
    data = {"token": button.token, "choice": button.choice}
    style = {"acknowledge": "positive", "deny": "destructive"}.get(button.choice)
    styled = {"style": style} if style else {}
    action: Element = {
        "type": "Action.Execute",
        "id": f"ackbot.{button.choice}",
        "title": label,
        "verb": button.choice,
        "data": data,
        **styled,
        "fallback": {"type": "Action.Submit", "title": label, "data": dict(data), **styled},
    }
    if needs_confirm(button):
        # Adaptive Cards have no confirm dialog: the tooltip at least says what the click does.
        _, question = CONFIRM_WORDING.get(button.choice, (label, "{title}"))
        action["tooltip"] = question.format(title=truncate(title, 100))
    return action


def _actions(note: Notification, link_buttons: bool) -> list[Element]:
    return [_action(b, note.title, link_buttons) for b in unique_buttons(note.buttons) if b.token or b.url]


def _refresh(note: Notification, link_buttons: bool) -> dict[str, Any] | None:
    """Lets Teams fetch the current card when someone opens the conversation (manual refresh with no userIds)."""
    if link_buttons:
        # A card posted through a webhook is not ours to refresh: its invokes go to the Workflows bot.
        return None
    if note.approval is not None:
        data = {"approval_id": note.approval.id}
    elif note.alert is not None:
        data = {"alert_id": note.alert.id}
    else:
        return None
    return {"action": {"type": "Action.Execute", "verb": "refresh", "data": data}, "userIds": []}


def _card(
    fallback: str,
    body: list[Element],
    actions: list[Element] | None = None,
    refresh: dict[str, Any] | None = None,
) -> Card:
    """The card envelope, built in one place."""
    card: Card = {
        "type": "AdaptiveCard",
        "$schema": SCHEMA_URL,
        "version": CARD_VERSION,
        "fallbackText": truncate(fallback, 500),
        "body": body,
    }
    if actions:
        card["actions"] = actions
    if refresh is not None:
        card["refresh"] = refresh
    return card


def _fit(build: Callable[[Budget], Card], max_bytes: int, minimal: Callable[[], Card]) -> Card:
    """The richest rendering within max_bytes; a title-and-buttons card if even the tightest one is too big."""
    card: Card = fit(build, json_size, max_bytes, LADDER)
    if json_size(card) <= max_bytes:
        return card
    small = minimal()
    if json_size(small) <= max_bytes or "actions" not in small:
        return small
    # Not even the buttons fit (absurdly small max_bytes or tokens): a card without them still says what happened.
    small.pop("actions")
    return small


def _minimal(note: Notification, link_buttons: bool, with_actions: bool) -> Callable[[], Card]:
    def build() -> Card:
        body = [
            _text(escape(truncate(note.title, 200)), weight="Bolder"),
            _subtle("This message was too large to show in full."),
        ]
        actions = _actions(note, link_buttons) if with_actions else None
        return _card(note.title, body, actions, _refresh(note, link_buttons))

    return build


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


def _subject(note: Notification, budget: Budget) -> list[Element]:
    """What a notification is about: summary, approval people and context, scope / labels, links, suppressed."""
    elements: list[Element] = []
    summary = note.summary.strip()
    if summary and budget.text > 0:
        elements.append(_text(escape(_paragraphs(truncate(summary, budget.text)))))
    approval = note.approval
    if approval is not None:
        people: list[tuple[str, str]] = []
        if approval.requester:
            people.append(("Requested by", approval.requester))
        if approval.approvers:
            people.append(("Approvers", ", ".join(approval.approvers)))
        if approval.quorum > 1:
            people.append(("Quorum", f"{approval.quorum} approvals"))
        # Requester, approvers and quorum are never dropped; only their lengths follow the budget.
        elements.extend(_facts(people, Budget(0, len(people), max(budget.value, 60), 0, 0), "people"))
        elements.extend(_facts(context_facts(approval.context), budget, "details"))
    scope = _scope(note)
    if scope is not None:
        elements.extend(_facts(scope_facts(scope), budget, "labels"))
    elements.extend(_links_set(_links(note), budget))
    if note.suppressed_count > 0 and note.extra.get("suppressed_text"):
        # Worded by ingest with the throttle window: "14 similar suppressed in the last hour".
        elements.append(_subtle(f"🔕 {escape(note.suppressed_text)}"))
    elif note.suppressed_count > 0:
        noun = "notification" if note.suppressed_count == 1 else "notifications"
        elements.append(_subtle(f"🔕 {note.suppressed_count} similar {noun} suppressed"))
    return elements


def _status_line(note: Notification, style: Style) -> str:
    parts = [f"{style.emoji} {style.label.upper()}"]
    status = status_of(note)
    if status:
        parts.append(f"{STATUS_EMOJI.get(status, '')} {status}".strip())
    return " · ".join(parts)


def _origin_line(note: Notification) -> str:
    alert = note.alert
    if alert is not None:
        count = f"{alert.event_count} events since" if alert.event_count > 1 else "Since"
        return f"{escape(alert.kind)} · {count} {_date(alert.first_seen)}"
    if note.event is not None:
        return f"{escape(note.event.kind)} · {_date(note.event.ts)}"
    return ""


# ---------------------------------------------------------------- notification views


def render_alert(note: Notification, *, max_bytes: int = DEFAULT_MAX_BYTES, link_buttons: bool = False) -> Card:
    """An alert (or plain notice) with severity, summary, scope, links and the choice buttons."""
    style = style_of(note)

    def build(budget: Budget) -> Card:
        body = [_banner(style, _status_line(note, style), note.title), *_subject(note, budget)]
        origin = _origin_line(note)
        if origin:
            body.append(_subtle(origin))
        prefix = f"{style.emoji} [{style.label}]" if style is not NOTICE_STYLE else style.emoji
        return _card(f"{prefix} {note.title}", body, _actions(note, link_buttons), _refresh(note, link_buttons))

    return _fit(build, max_bytes, _minimal(note, link_buttons, True))


def render_approval(note: Notification, *, max_bytes: int = DEFAULT_MAX_BYTES, link_buttons: bool = False) -> Card:
    """An approval request: requester, approvers, context, time left and the choice buttons."""
    approval = note.approval
    if approval is None:
        return render_alert(note, max_bytes=max_bytes, link_buttons=link_buttons)
    style = style_of(note) if note.alert is not None else APPROVAL_STYLE
    left = time_left(approval.expires_at, reference_time(note))

    def build(budget: Budget) -> Card:
        line = f"{APPROVAL_STYLE.emoji} APPROVAL REQUESTED · ⏳ {left}"
        body = [_banner(style, line, note.title)]
        body.append(_subtle(f"⏳ Decide by {_date(approval.expires_at)}"))
        if approval.state is ApprovalState.escalated:
            who = f" by {escape(truncate(approval.decided_by, 200))}" if approval.decided_by else ""
            body.append(_text(f"⏫ Escalated{who} · level {approval.escalation_level}", color="warning"))
        body.extend(_subject(note, budget))
        if approval.rule:
            body.append(_subtle(f"Rule {escape(approval.rule)}"))
        return _card(
            f"{APPROVAL_STYLE.emoji} Approval requested: {note.title}",
            body,
            _actions(note, link_buttons),
            _refresh(note, link_buttons),
        )

    return _fit(build, max_bytes, _minimal(note, link_buttons, True))


def _bold(text: str) -> str:
    return f"**{text}**"


def render_decided(note: Notification, *, max_bytes: int = DEFAULT_MAX_BYTES, link_buttons: bool = False) -> Card:
    """The final state of an approval or alert: who decided what, and when; no buttons."""
    # Nothing decided yet: show it as pending rather than fail.
    decided: Outcome = outcome_of(note) or PENDING_OUTCOME

    def build(budget: Budget) -> Card:
        sentence = outcome_sentence(decided, escape, _bold)
        if decided.at is not None:
            sentence += f" · {_date(decided.at)}"
        line = f"{decided.style.emoji} {decided.style.label.upper()}"
        severity = style_of(note)
        if severity is not APPROVAL_STYLE and severity is not NOTICE_STYLE:
            line += f" · was {severity.emoji} {severity.label}"
        body = [_banner(decided.style, line, note.title), _text(f"{decided.style.emoji} {sentence}")]
        body.extend(_subject(note, budget))
        fallback = f"{decided.style.emoji} {outcome_sentence(decided, str, str)}: {note.title}"
        return _card(fallback, body, None, _refresh(note, link_buttons))

    return _fit(build, max_bytes, _minimal(note, link_buttons, False))


def render(note: Notification, *, max_bytes: int = DEFAULT_MAX_BYTES, link_buttons: bool = False) -> Card:
    """The right view for a notification: digest, report, decided, approval request or alert."""
    if note.purpose is DeliveryPurpose.digest and "digest" in note.extra:
        return render_digest_note(note, max_bytes=max_bytes)
    if note.purpose is DeliveryPurpose.report and "report" in note.extra:
        return render_report(note, max_bytes=max_bytes)
    view = view_of(note)
    if view == "decided":
        return render_decided(note, max_bytes=max_bytes, link_buttons=link_buttons)
    if view == "approval":
        return render_approval(note, max_bytes=max_bytes, link_buttons=link_buttons)
    return render_alert(note, max_bytes=max_bytes, link_buttons=link_buttons)


def render_for_workflows(note: Notification) -> Card:
    """render() for a Workflows webhook: fits 28 KB with its wrapper; buttons link to the web ack page."""
    # Invokes from a webhook-posted card go to the Workflows bot, never to us, so Action.Execute would be dead.
    return render(note, max_bytes=WORKFLOWS_CARD_MAX_BYTES, link_buttons=True)


# ---------------------------------------------------------------- lists and replies


def _alert_row(alert: Alert) -> Element:
    style = SEVERITY_STYLES[alert.severity]
    status = {AlertStatus.open: "firing", AlertStatus.acknowledged: "acknowledged", AlertStatus.resolved: "resolved"}[
        alert.status
    ]
    parts = [f"{style.emoji} **{escape(truncate(alert.title, ROW_TITLE_MAX))}**", f"{STATUS_EMOJI[status]} {status}"]
    parts.extend(escape(truncate(p, 80)) for p in (alert.scope.namespace, alert.scope.repo) if p)
    parts.append(f"last {_date(alert.last_seen)}")
    parts.append(escape(truncate(alert.id, 60)))
    return _text(" · ".join(parts), spacing="Small")


def _approval_row(approval: Approval) -> Element:
    if approval.state is ApprovalState.pending:
        emoji, state = "⏳", "pending"
    else:
        outcome = OUTCOME_STYLES[approval.state.value]
        emoji, state = outcome.emoji, outcome.label.lower()
    parts = [f"{emoji} **{escape(truncate(approval.title, ROW_TITLE_MAX))}**", state]
    if approval.requester:
        parts.append(f"by {escape(truncate(approval.requester, 60))}")
    if approval.state in (ApprovalState.pending, ApprovalState.escalated):
        parts.append(f"expires {_date(approval.expires_at)}")
    parts.append(escape(truncate(approval.id, 60)))
    return _text(" · ".join(parts), spacing="Small")


def _rows(rows: list[Element], total: int, noun: str) -> list[Element]:
    hidden = total - len(rows)
    return [*rows, _subtle(and_more(hidden, noun))] if hidden > 0 else rows


def _heading(text: str) -> Element:
    return _text(escape(truncate(" ".join(text.split()), TITLE_MAX)), size="Large", weight="Bolder", style="heading")


def _list_minimal(title: str, count: int, noun: str) -> Callable[[], Card]:
    def build() -> Card:
        return _card(title, [_heading(title), _subtle(f"{count} {noun}: too many to show here.")])

    return build


def render_digest(
    title: str,
    groups: dict[str, int],
    items: list[Alert],
    total: int,
    link: str | None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Card:
    """A digest: how many alerts per group, the most relevant ones, and a link to all of them."""
    ordered = sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))
    count = max(total, len(items))
    noun = "alert" if count == 1 else "alerts"

    def build(budget: Budget) -> Card:
        body: list[Element] = [_heading(f"📬 {title}"), _text(f"**{count}** {noun} in this digest")]
        body.extend(_facts([(name, str(n)) for name, n in ordered], budget, "groups"))
        shown, _ = take(items, budget.items)
        if shown:
            body.append(_text("Alerts", weight="Bolder", separator=True))
            body.extend(_rows([_alert_row(a) for a in shown], count, "alerts"))
        actions = [{"type": "Action.OpenUrl", "title": "Open in ackbot", "url": link}] if link else None
        return _card(f"📬 {title}: {count} {noun}", body, actions)

    return _fit(build, max_bytes, _list_minimal(title, count, noun))


def render_digest_note(note: Notification, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Card:
    """A digest delivery (content in note.extra["digest"]) as render_digest shows it."""
    digest = note.extra["digest"]
    items = [Alert.model_validate({k: v for k, v in a.items() if k != "digest_events"}) for a in digest["items"]]
    groups = dict(digest["groups"])
    return render_digest(note.title, groups, items, int(digest["total"]), digest.get("link"), max_bytes=max_bytes)


def _expiring_row(item: dict[str, Any]) -> Element:
    alert = item["alert"]
    when = "⛔ expired" if item["expired"] else f"⏳ in {item['days_left']} days"
    title = escape(truncate(str(alert["title"]), ROW_TITLE_MAX))
    parts = [when, f"**{title}**", escape(str(item["expires_at"])), escape(truncate(str(alert["id"]), 60))]
    return _text(" · ".join(parts), spacing="Small")


def render_report(note: Notification, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Card:
    """The scheduled report (note.extra["report"]): open alerts, pending approvals, what expires soon."""
    report = note.extra["report"]
    open_alerts, approvals, expiring = report["open_alerts"], report["pending_approvals"], report["expiring"]
    alerts = [Alert.model_validate(a) for a in open_alerts["items"]]
    title = f"📋 {note.title}"

    def build(budget: Budget) -> Card:
        body: list[Element] = [_heading(title)]
        body.append(_text(f"**Open alerts: {open_alerts['total']}**", separator=True))
        counts = [(severity, str(count)) for severity, count in open_alerts["by_severity"].items()]
        body.extend(_facts(counts, budget, "severities"))
        shown, _ = take(alerts, budget.items // 3)
        body.extend(_rows([_alert_row(a) for a in shown], open_alerts["total"], "alerts"))
        if approvals["available"]:
            body.append(_text(f"**Pending approvals: {approvals['total']}**", separator=True))
            pending = [Approval.model_validate(a) for a in approvals["items"]]
            shown_approvals, _ = take(pending, budget.items // 3)
            body.extend(_rows([_approval_row(a) for a in shown_approvals], approvals["total"], "approvals"))
        else:
            body.append(_subtle(f"Pending approvals not included: {escape(str(approvals['note']))}"))
        body.append(_text(f"**Expiring within {expiring['within_days']} days: {expiring['total']}**", separator=True))
        shown_expiring, _ = take(expiring["items"], budget.items // 3)
        body.extend(_rows([_expiring_row(i) for i in shown_expiring], expiring["total"], "items"))
        link = report.get("link")
        actions = [{"type": "Action.OpenUrl", "title": "Open alerts in ackbot", "url": link}] if link else None
        fallback = f"{title}: {open_alerts['total']} open alerts, {expiring['total']} expiring"
        return _card(fallback, body, actions)

    return _fit(build, max_bytes, _list_minimal(title, open_alerts["total"], "open alerts"))


def render_alert_list(alerts: list[Alert], title: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Card:
    """A list of alerts, one line each, for command replies."""

    def build(budget: Budget) -> Card:
        body: list[Element] = [_heading(title)]
        if not alerts:
            body.append(_text("No alerts."))
        else:
            shown, _ = take(alerts, budget.items)
            body.extend(_rows([_alert_row(a) for a in shown], len(alerts), "alerts"))
        return _card(f"{title}: {len(alerts)} alerts", body)

    return _fit(build, max_bytes, _list_minimal(title, len(alerts), "alerts"))


def render_approval_list(approvals: list[Approval], *, max_bytes: int = DEFAULT_MAX_BYTES) -> Card:
    """A list of approvals, one line each, for command replies."""
    title = "Approvals"

    def build(budget: Budget) -> Card:
        body: list[Element] = [_heading(f"🙋 {title}")]
        if not approvals:
            body.append(_text("No approvals waiting."))
        else:
            shown, _ = take(approvals, budget.items)
            body.extend(_rows([_approval_row(a) for a in shown], len(approvals), "approvals"))
        return _card(f"{title}: {len(approvals)}", body)

    return _fit(build, max_bytes, _list_minimal(title, len(approvals), "approvals"))


def render_text(text: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Card:
    """A plain reply; the text is escaped, since replies often echo what a user typed."""
    raw = text.strip()

    def build(budget: Budget) -> Card:
        # The tightest budget still says something.
        shown = truncate(raw, max(budget.text, 200))
        return _card(truncate(raw, 200), [_text(escape(_paragraphs(shown)))])

    return _fit(build, max_bytes, lambda: _card("", [_text("(reply too long to show)")]))


def wrap_for_workflows(card: Card) -> dict[str, Any]:
    """The body a Teams Workflows (Power Automate) webhook expects around an Adaptive Card."""
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }
