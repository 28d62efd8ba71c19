"""Slack Block Kit renderers: a Notification (or a list) in, a chat.postMessage body out.

Every function returns ``{"text": fallback, "blocks": [...]}`` and, for views with a severity, an
``attachments`` entry whose only job is the coloured bar. Output is deterministic (no wall clock) and
never exceeds Slack's documented limits: content is cut with "…" / "… and N more" rather than failing.

Event-supplied text is escaped (see :func:`escape`) before it reaches any mrkdwn field, so an alert cannot
ping a channel, hide a link or restyle the message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bot.cards import slack_blocks as kit
from bot.cards.common import (
    APPROVAL_STYLE,
    NOTICE_STYLE,
    OUTCOME_STYLES,
    PENDING_OUTCOME,
    SEVERITY_STYLES,
    STATUS_EMOJI,
    Budget,
    Outcome,
    Style,
    and_more,
    context_facts,
    outcome_of,
    outcome_sentence,
    reference_time,
    scope_facts,
    status_of,
    style_of,
    take,
    time_left,
    view_of,
)
from core.models.approvals import Approval, ApprovalState
from core.models.deliveries import DeliveryPurpose
from core.models.events import Alert, AlertStatus, Link, Scope

if TYPE_CHECKING:
    from core.channels.base import Notification

Block = dict[str, Any]
Message = dict[str, Any]


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
        blocks.append(kit.section(kit.escape(note.summary.strip()), budget.text))
    approval = note.approval
    if approval is not None:
        people: list[dict[str, Any]] = []
        if approval.requester:
            people.append(kit.field("Requested by", kit.cut(kit.escape(approval.requester), budget.value)))
        if approval.approvers:
            people.append(kit.field("Approvers", kit.cut(kit.escape(", ".join(approval.approvers)), budget.value)))
        if approval.quorum > 1:
            people.append(kit.field("Quorum", f"{approval.quorum} approvals"))
        blocks.extend(kit.field_sections(people))
        blocks.extend(kit.fact_blocks(context_facts(approval.context), budget, "details"))
    scope = _scope(note)
    if scope is not None:
        blocks.extend(kit.fact_blocks(scope_facts(scope), budget, "labels"))
    links = kit.links_block(_links(note), budget)
    if links is not None:
        blocks.append(links)
    if note.suppressed_count > 0 and note.extra.get("suppressed_text"):
        # Worded by ingest with the throttle window: "14 similar suppressed in the last hour".
        blocks.append(kit.context(f"🔕 {kit.escape(note.suppressed_text)}"))
    elif note.suppressed_count > 0:
        noun = "notification" if note.suppressed_count == 1 else "notifications"
        blocks.append(kit.context(f"🔕 {note.suppressed_count} similar {noun} suppressed"))
    return blocks


def _alert_footer(note: Notification, style: Style) -> str:
    parts = [f"{style.emoji} *{style.label}*"]
    status = status_of(note)
    if status:
        parts.append(f"{STATUS_EMOJI.get(status, '')} {status}".strip())
    alert = note.alert
    if alert is not None:
        parts.append(kit.escape(alert.kind))
        if alert.event_count > 1:
            parts.append(f"{alert.event_count} events since {kit.date_text(alert.first_seen)}")
        else:
            parts.append(f"since {kit.date_text(alert.first_seen)}")
    elif note.event is not None:
        parts.append(kit.escape(note.event.kind))
        parts.append(kit.date_text(note.event.ts))
    return " · ".join(parts)


def _fallback(prefix: str, title: str) -> str:
    return f"{prefix} {kit.escape(title)}"


# ---------------------------------------------------------------- notification views


def render_alert(note: Notification) -> Message:
    """An alert (or plain notice) with severity, summary, scope, links and the choice buttons."""
    style = style_of(note)

    def build(budget: Budget) -> Message:
        blocks = [kit.header(f"{style.emoji} {note.title}"), *_subject_blocks(note, budget)]
        actions = kit.actions_block(note.buttons, note.title)
        if actions is not None:
            blocks.append(actions)
        prefix = f"{style.emoji} [{style.label}]" if style is not NOTICE_STYLE else style.emoji
        status = status_of(note)
        if status and status != "firing":
            prefix += f" ({status})"
        return kit.message(_fallback(prefix, note.title), blocks, style, _alert_footer(note, style))

    return kit.fit_message(build)


def render_approval(note: Notification) -> Message:
    """An approval request: requester, approvers, context, time left and the choice buttons."""
    approval = note.approval
    if approval is None:
        return render_alert(note)
    style = style_of(note) if note.alert is not None else APPROVAL_STYLE
    now = reference_time(note)
    left = time_left(approval.expires_at, now)

    def build(budget: Budget) -> Message:
        blocks = [kit.header(f"{style.emoji} {note.title}")]
        blocks.append(kit.section(f"*Approval requested* · ⏳ {kit.date_text(approval.expires_at)} ({left})"))
        if approval.state is ApprovalState.escalated:
            who = f" by {kit.cut(kit.escape(approval.decided_by), 200)}" if approval.decided_by else ""
            blocks.append(kit.context(f"⏫ Escalated{who} · level {approval.escalation_level}"))
        blocks.extend(_subject_blocks(note, budget))
        actions = kit.actions_block(note.buttons, note.title)
        if actions is not None:
            blocks.append(actions)
        footer_parts = [f"{style.emoji} *{style.label}*"]
        if approval.rule:
            footer_parts.append(f"rule {kit.escape(approval.rule)}")
        fallback = _fallback(f"{APPROVAL_STYLE.emoji} Approval requested:", note.title)
        return kit.message(fallback, blocks, style, " · ".join(footer_parts))

    return kit.fit_message(build)


def _bold(text: str) -> str:
    return f"*{text}*"


def _outcome_line(outcome: Outcome) -> str:
    sentence = outcome_sentence(outcome, kit.escape, _bold)
    if outcome.at is not None:
        sentence += f" · {kit.date_text(outcome.at)}"
    return f"{outcome.style.emoji} {sentence}"


def render_decided(note: Notification) -> Message:
    """The final state of an approval or alert: who decided what, and when; no buttons."""
    # Nothing decided yet: show it as pending rather than fail.
    decided = outcome_of(note) or PENDING_OUTCOME

    def build(budget: Budget) -> Message:
        blocks = [kit.header(f"{decided.style.emoji} {note.title}"), kit.section(_outcome_line(decided))]
        blocks.extend(_subject_blocks(note, budget))
        fallback = _fallback(f"{decided.style.emoji} {outcome_sentence(decided, kit.escape, str)}:", note.title)
        footer = f"{decided.style.emoji} *{decided.style.label}*"
        severity = style_of(note)
        if severity is not APPROVAL_STYLE and severity is not NOTICE_STYLE:
            footer += f" · was {severity.emoji} {severity.label}"
        return kit.message(fallback, blocks, decided.style, footer)

    return kit.fit_message(build)


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
        row = kit.cut(row, kit.SECTION_TEXT_MAX)
        if current and size + 1 + len(row) > kit.SECTION_TEXT_MAX:
            blocks.append(kit.section("\n".join(current)))
            current, size = [], 0
        current.append(row)
        size += len(row) + (1 if size else 0)
    if current:
        blocks.append(kit.section("\n".join(current)))
    hidden = total - len(rows)
    if hidden > 0:
        blocks.append(kit.context(and_more(hidden, noun)))
    return blocks


def _alert_row(alert: Alert) -> str:
    style = SEVERITY_STYLES[alert.severity]
    status = {AlertStatus.open: "firing", AlertStatus.acknowledged: "acknowledged", AlertStatus.resolved: "resolved"}[
        alert.status
    ]
    parts = [
        f"{style.emoji} *{kit.cut(kit.escape(alert.title), kit.ROW_TITLE_MAX)}*",
        f"{STATUS_EMOJI[status]} {status}",
    ]
    parts.extend(kit.cut(kit.escape(p), 80) for p in (alert.scope.namespace, alert.scope.repo) if p)
    parts.append(f"last {kit.date_text(alert.last_seen)}")
    parts.append(kit.cut(kit.escape(alert.id), 60))
    return " · ".join(parts)


def _approval_row(approval: Approval) -> str:
    if approval.state is ApprovalState.pending:
        emoji, state = "⏳", "pending"
    else:
        outcome = OUTCOME_STYLES[approval.state.value]
        emoji, state = outcome.emoji, outcome.label.lower()
    parts = [f"{emoji} *{kit.cut(kit.escape(approval.title), kit.ROW_TITLE_MAX)}*", state]
    if approval.requester:
        parts.append(f"by {kit.cut(kit.escape(approval.requester), 60)}")
    if approval.state in (ApprovalState.pending, ApprovalState.escalated):
        parts.append(f"expires {kit.date_text(approval.expires_at)}")
    parts.append(kit.cut(kit.escape(approval.id), 60))
    return " · ".join(parts)


def render_digest(title: str, groups: dict[str, int], items: list[Alert], total: int, link: str | None) -> Message:
    """A digest: how many alerts per group, the most relevant ones, and a link to all of them."""
    ordered = sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))
    count = max(total, len(items))

    def build(budget: Budget) -> Message:
        noun = "alert" if count == 1 else "alerts"
        blocks: list[Block] = [kit.header(f"📬 {title}"), kit.section(f"*{count}* {noun} in this digest")]
        shown_groups, hidden_groups = take(ordered, budget.facts)
        blocks.extend(kit.field_sections([kit.field(name, str(n)) for name, n in shown_groups]))
        if hidden_groups:
            blocks.append(kit.context(and_more(hidden_groups, "groups")))
        if items:
            blocks.append({"type": "divider"})
            shown, _ = take(items, budget.items)
            blocks.extend(_rows_blocks([_alert_row(a) for a in shown], count, "alerts"))
        if link and len(link) <= kit.BUTTON_URL_MAX:
            button = {
                "type": "button",
                "action_id": "ackbot.open_digest",
                "text": kit.plain("Open in ackbot", kit.BUTTON_TEXT_MAX),
                "url": link,
            }
            blocks.append({"type": "actions", "elements": [button]})
        return kit.message(f"📬 {kit.escape(title)}: {count} {noun}", blocks)

    return kit.fit_message(build)


def render_digest_note(note: Notification) -> Message:
    """A digest delivery (content in note.extra["digest"]) as render_digest shows it."""
    digest = note.extra["digest"]
    items = [Alert.model_validate({k: v for k, v in a.items() if k != "digest_events"}) for a in digest["items"]]
    return render_digest(note.title, dict(digest["groups"]), items, int(digest["total"]), digest.get("link"))


def _expiring_row(item: Mapping[str, Any]) -> str:
    alert = item["alert"]
    when = "⛔ expired" if item["expired"] else f"⏳ in {item['days_left']} days"
    title = kit.cut(kit.escape(str(alert["title"])), kit.ROW_TITLE_MAX)
    return f"{when} · *{title}* · {kit.escape(str(item['expires_at']))} · {kit.cut(kit.escape(str(alert['id'])), 60)}"


def render_report(note: Notification) -> Message:
    """The scheduled report (note.extra["report"]): open alerts, pending approvals, what expires soon."""
    report = note.extra["report"]
    open_alerts, approvals, expiring = report["open_alerts"], report["pending_approvals"], report["expiring"]
    alerts = [Alert.model_validate(a) for a in open_alerts["items"]]

    def build(budget: Budget) -> Message:
        blocks: list[Block] = [kit.header(f"📋 {note.title}")]
        blocks.append(kit.section(f"*Open alerts: {open_alerts['total']}*"))
        counts = [kit.field(severity, str(count)) for severity, count in open_alerts["by_severity"].items()]
        blocks.extend(kit.field_sections(counts))
        shown, _ = take(alerts, budget.items // 3)
        if shown:
            blocks.extend(_rows_blocks([_alert_row(a) for a in shown], open_alerts["total"], "alerts"))
        blocks.append({"type": "divider"})
        if approvals["available"]:
            blocks.append(kit.section(f"*Pending approvals: {approvals['total']}*"))
            pending = [Approval.model_validate(a) for a in approvals["items"]]
            shown_approvals, _ = take(pending, budget.items // 3)
            if shown_approvals:
                rows = [_approval_row(a) for a in shown_approvals]
                blocks.extend(_rows_blocks(rows, approvals["total"], "approvals"))
        else:
            blocks.append(kit.context(f"Pending approvals not included: {kit.escape(str(approvals['note']))}"))
        blocks.append({"type": "divider"})
        blocks.append(kit.section(f"*Expiring within {expiring['within_days']} days: {expiring['total']}*"))
        shown_expiring, _ = take(expiring["items"], budget.items // 3)
        if shown_expiring:
            blocks.extend(_rows_blocks([_expiring_row(i) for i in shown_expiring], expiring["total"], "items"))
        link = report.get("link")
        if link and len(link) <= kit.BUTTON_URL_MAX:
            button = {
                "type": "button",
                "action_id": "ackbot.open_report",
                "text": kit.plain("Open alerts in ackbot", kit.BUTTON_TEXT_MAX),
                "url": link,
            }
            blocks.append({"type": "actions", "elements": [button]})
        fallback = (
            f"📋 {kit.escape(note.title)}: {open_alerts['total']} open alerts, "
            f"{expiring['total']} expiring within {expiring['within_days']} days"
        )
        return kit.message(fallback, blocks[: kit.MAX_BLOCKS])

    return kit.fit_message(build)


def render_alert_list(alerts: list[Alert], title: str) -> Message:
    """A list of alerts, one line each, for slash-command replies."""

    def build(budget: Budget) -> Message:
        blocks: list[Block] = [kit.header(title)]
        if not alerts:
            blocks.append(kit.section("No alerts."))
        else:
            shown, _ = take(alerts, budget.items)
            blocks.extend(_rows_blocks([_alert_row(a) for a in shown], len(alerts), "alerts"))
        return kit.message(f"{kit.escape(title)}: {len(alerts)} alerts", blocks)

    return kit.fit_message(build)


def render_approval_list(approvals: list[Approval]) -> Message:
    """A list of approvals, one line each, for slash-command replies."""
    title = "Approvals"

    def build(budget: Budget) -> Message:
        blocks: list[Block] = [kit.header(f"🙋 {title}")]
        if not approvals:
            blocks.append(kit.section("No approvals waiting."))
        else:
            shown, _ = take(approvals, budget.items)
            blocks.extend(_rows_blocks([_approval_row(a) for a in shown], len(approvals), "approvals"))
        return kit.message(f"{title}: {len(approvals)}", blocks)

    return kit.fit_message(build)


def render_text(text: str) -> Message:
    """A plain reply; the text is escaped, since replies often echo what a user typed."""
    raw = text.strip() or " "

    def build(budget: Budget) -> Message:
        # Split the raw text, then escape each piece, so no entity is torn in two across sections.
        # Escaping can lengthen a piece; a piece of a third of the limit leaves room for that.
        piece = kit.SECTION_TEXT_MAX // 3
        shown = raw[: budget.text * 10]
        blocks = [kit.section(kit.escape(shown[i : i + piece])) for i in range(0, len(shown), piece)]
        if len(shown) < len(raw):
            blocks.append(kit.context(and_more(len(raw) - len(shown), "characters")))
        return kit.message(kit.escape(raw), blocks)

    return kit.fit_message(build)
