"""Slack Block Kit renderers: golden files, Block Kit validation, limits, truncation and escaping."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.models.blocks import Block

from bot.cards import samples, slack, slack_blocks
from core.channels.base import Button, Notification
from core.models.approvals import Approval
from core.models.deliveries import DeliveryPurpose
from core.models.events import AlertStatus, Link, Scope
from tests.card_checks import (
    HOSTILE_VIEWS,
    HUGE_NOTE_FIELDS,
    assert_golden,
    hostile_views,
    huge_note,
    many_alerts,
    sample_views,
    walk,
)

CARDS_DIR = Path(__file__).resolve().parents[1] / "bot" / "cards"
FORBIDDEN = ("aiohttp", "sqlalchemy", "slack_sdk.web", "slack_bolt", "botbuilder.core", "core.store")

NOTES = samples.notifications()


def _outputs() -> dict[str, dict[str, Any]]:
    """Every golden view."""
    return sample_views(slack, "Muted *payments* for 1h & told <@U123>.")


OUTPUTS = _outputs()


def mrkdwn_texts(message: dict[str, Any]) -> list[str]:
    """All mrkdwn strings Slack will parse, including the top-level fallback text."""
    texts = [message["text"]]
    texts.extend(d["text"] for d in walk(message) if d.get("type") == "mrkdwn")
    return texts


def assert_valid(message: dict[str, Any]) -> None:
    """What Slack would check: every block parses and validates, and the message is within every limit."""
    assert set(message) <= {"text", "blocks", "attachments"}
    assert isinstance(message["text"], str) and 0 < len(message["text"]) <= slack_blocks.FALLBACK_TEXT_MAX
    blocks = message["blocks"]
    assert 0 < len(blocks) <= slack_blocks.MAX_BLOCKS
    all_blocks = list(blocks)
    for attachment in message.get("attachments", []):
        assert re.fullmatch(r"#[0-9A-F]{6}", attachment["color"])
        all_blocks.extend(attachment["blocks"])
    for raw in all_blocks:
        parsed = Block.parse(raw)
        assert parsed is not None, raw
        parsed.validate_json()
    action_ids: list[str] = []
    for d in walk(message):
        kind = d.get("type")
        if kind == "header":
            assert len(d["text"]["text"]) <= slack_blocks.HEADER_TEXT_MAX
        elif kind == "section":
            assert "text" in d or "fields" in d
            if "text" in d:
                assert len(d["text"]["text"]) <= slack_blocks.SECTION_TEXT_MAX
            assert len(d.get("fields", [])) <= slack_blocks.FIELDS_PER_SECTION
            assert all(len(f["text"]) <= slack_blocks.FIELD_TEXT_MAX for f in d.get("fields", []))
        elif kind == "context":
            assert 0 < len(d["elements"]) <= slack_blocks.CONTEXT_ELEMENTS_MAX
            assert all(len(e["text"]) <= slack_blocks.SECTION_TEXT_MAX for e in d["elements"])
        elif kind == "button":
            assert len(d["text"]["text"]) <= slack_blocks.BUTTON_TEXT_MAX
            assert len(d.get("value", "")) <= slack_blocks.BUTTON_VALUE_MAX
            action_ids.append(d["action_id"])
        elif kind in ("plain_text", "mrkdwn"):
            assert d["text"], "Slack rejects empty text objects"
    assert len(action_ids) == len(set(action_ids)), "action_id must be unique within a message"
    assert slack_blocks.message_text_size(message) <= slack_blocks.MESSAGE_TEXT_MAX
    json.dumps(message)  # plain JSON, nothing exotic


# ---------------------------------------------------------------- golden files and validity


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_golden(name: str) -> None:
    assert_golden("slack", name, OUTPUTS[name])


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_every_view_validates(name: str) -> None:
    assert_valid(OUTPUTS[name])


@pytest.mark.parametrize("name", sorted(NOTES))
def test_each_view_function_validates_for_every_sample(name: str) -> None:
    # Each view must cope with any notification, not only the one render() would pick for it.
    for view in (slack.render_alert, slack.render_approval, slack.render_decided):
        assert_valid(view(NOTES[name]))


def test_rendering_is_deterministic() -> None:
    assert _outputs() == OUTPUTS


# ---------------------------------------------------------------- dispatch and content


def _actions(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]


@pytest.mark.parametrize(
    ("name", "has_buttons", "header_emoji"),
    [
        ("alert_firing", True, "🔴"),
        ("approval_pending", True, "🙋"),
        ("approval_escalated", True, "🙋"),  # escalated is not final: new approvers still decide
        ("approval_acknowledged", False, "✅"),
        ("approval_denied", False, "⛔"),
        ("approval_expired", False, "⌛"),
        ("approval_cancelled", False, "🚫"),
        ("alert_acknowledged", False, "✅"),
        ("alert_resolved", False, "✅"),
        ("event_resolved_update", False, "✅"),
    ],
)
def test_render_picks_the_view(name: str, has_buttons: bool, header_emoji: str) -> None:
    message = slack.render(NOTES[name])
    assert bool(_actions(message)) is has_buttons
    assert message["blocks"][0]["text"]["text"].startswith(header_emoji)


def test_acknowledged_alert_first_notification_is_an_alert_view() -> None:
    note = NOTES["alert_acknowledged"].model_copy(update={"purpose": DeliveryPurpose.notify})
    assert slack.render(note)["blocks"][0]["text"]["text"].startswith("🔴")


def test_alert_view_shows_scope_labels_links_status_and_suppressed() -> None:
    message = slack.render_alert(NOTES["alert_firing"])
    text = json.dumps(message, ensure_ascii=False)
    for expected in (
        "*Namespace*\\npayments",
        "*Repo*\\ngithub.com/acme/payments-api",
        "*Digest*\\nsha256:4f2a9c1e0b7d3a5f",
        "*service_name*\\npayments_api",  # snake_case survives escaping
        "<https://runbooks.example.com/payments/latency|Runbook>",
        "3 similar notifications suppressed",
        "🔥 firing",
    ):
        assert expected in text
    assert message["attachments"][0]["color"] == "#B3001B"
    assert message["text"].startswith("🔴 [Critical]")


def test_buttons_carry_choice_token_style_and_confirm() -> None:
    buttons = {b["action_id"]: b for b in _actions(slack.render_alert(NOTES["alert_firing"]))}
    assert list(buttons) == ["ackbot.acknowledge", "ackbot.deny", "ackbot.escalate"]
    ack, deny, esc = buttons.values()
    assert ack["value"] == "v1.al.acknowledge.c2lnbmF0dXJl"
    assert ack["style"] == "primary" and "confirm" not in ack
    assert deny["style"] == "danger" and deny["confirm"]["style"] == "danger"
    assert "style" not in esc and esc["confirm"]["confirm"]["text"] == "Escalate"


def test_button_labels_from_the_dispatcher_win() -> None:
    note = NOTES["alert_firing"].model_copy(
        update={"buttons": [Button(choice="acknowledge", label="On it", token="t", url="https://x.example/ack/t")]}
    )
    assert _actions(slack.render(note))[0]["text"]["text"] == "On it"


def test_oversized_token_becomes_a_link_to_the_web_ack_page() -> None:
    big = Button(choice="acknowledge", label="", token="t" * 5000, url="https://ackbot.example.com/ack/x")
    message = slack.render_alert(NOTES["alert_firing"].model_copy(update={"buttons": [big]}))
    assert_valid(message)
    (button,) = _actions(message)
    assert button["url"] == big.url and "value" not in button
    assert button["action_id"] == "ackbot.open.acknowledge"


def test_duplicate_choices_render_once() -> None:
    note = NOTES["alert_firing"].model_copy(update={"buttons": [*samples.buttons("a"), *samples.buttons("b")]})
    message = slack.render(note)
    assert_valid(message)
    assert len(_actions(message)) == 3


def test_time_left_comes_from_the_notification_not_the_clock() -> None:
    note = NOTES["approval_pending"]
    assert "(expires in 45m)" in json.dumps(slack.render(note))
    later = note.model_copy(update={"created_at": samples.T0 + timedelta(minutes=70)})
    assert "(expired 10m ago)" in json.dumps(slack.render(later))


def test_decided_shows_who_and_when_with_a_slack_date() -> None:
    section = slack.render(NOTES["approval_denied"])["blocks"][1]["text"]["text"]
    ts = int((samples.T0 + timedelta(minutes=20)).timestamp())
    assert section == f"⛔ *Denied* by bob · <!date^{ts}^{{date_short_pretty}} {{time}}|2024-05-01 12:20 UTC>"


def test_decided_on_a_pending_approval_does_not_fail() -> None:
    message = slack.render_decided(NOTES["approval_pending"])
    assert_valid(message)
    assert not _actions(message)


def test_notice_without_alert_or_approval() -> None:
    message = slack.render(NOTES["test_notice"])
    assert message["blocks"][0]["text"]["text"] == "🔔 ackbot test message"
    assert "attachments" in message


# ---------------------------------------------------------------- truncation with huge inputs


@pytest.mark.parametrize("view", ["render_alert", "render_approval", "render_decided", "render"])
def test_huge_notification_is_truncated_not_rejected(view: str) -> None:
    message = getattr(slack, view)(huge_note())
    assert_valid(message)
    text = json.dumps(message, ensure_ascii=False)
    assert "more labels" in text or "more details" in text
    assert "…" in message["blocks"][0]["text"]["text"]


def test_huge_alert_without_approval_lists_how_many_labels_were_left_out() -> None:
    note = huge_note().model_copy(update={"approval": None})
    message = slack.render_alert(note)
    assert_valid(message)
    shown = sum(len(b.get("fields", [])) for b in message["blocks"] if b["type"] == "section")
    hidden = int(re.search(r"and (\d+) more labels", json.dumps(message))[1])  # type: ignore[index]
    assert shown + hidden == HUGE_NOTE_FIELDS


def test_500_alert_list_stays_valid_and_counts_the_rest() -> None:
    message = slack.render_alert_list(many_alerts(500), "All alerts")
    assert_valid(message)
    rows = sum(b["text"]["text"].count("\n") + 1 for b in message["blocks"] if b["type"] == "section")
    hidden = int(re.search(r"and (\d+) more alerts", json.dumps(message))[1])  # type: ignore[index]
    assert rows + hidden == 500


def test_500_approval_list_stays_valid() -> None:
    approvals = [samples.approval(id=f"ap_{i:04d}", title="x" * 500) for i in range(500)]
    message = slack.render_approval_list(approvals)
    assert_valid(message)
    assert "more approvals" in json.dumps(message)


def test_huge_digest_stays_valid() -> None:
    groups = {f"group-{i}": i for i in range(300)}
    message = slack.render_digest("Digest " + "d" * 500, groups, many_alerts(500), 10_000, "https://a.example/d")
    assert_valid(message)
    text = json.dumps(message)
    assert "more groups" in text and "more alerts" in text and "*10000* alerts" in text


def test_huge_text_reply_stays_valid() -> None:
    message = slack.render_text("&<>" * 40_000)
    assert_valid(message)
    assert "more characters" in json.dumps(message)


def test_block_cap_keeps_the_buttons() -> None:
    blocks = [slack_blocks.section(str(i)) for i in range(80)] + [{"type": "actions", "elements": []}]
    message = slack_blocks.message("x", blocks)
    assert len(message["blocks"]) == slack_blocks.MAX_BLOCKS
    assert message["blocks"][-1]["type"] == "actions"
    assert message["blocks"][-2]["elements"][0]["text"] == "… and 32 more blocks"


# ---------------------------------------------------------------- escaping

INJECTIONS = "<!channel> <!here|here> @here @channel <https://evil.example|click> <@U123> & *bold* _it_ ~s~ `c`"
# Markup we emit ourselves: Slack dates and the event's own http(s) links.
OUR_MARKUP = re.compile(
    r"<!date\^\d+\^\{date_short_pretty\} \{time\}\|[^<>|]*>|<https://safe\.example/[^<>|]*\|[^<>|]*>"
)


def _hostile_note() -> Notification:
    scope = Scope(namespace=INJECTIONS[:256], labels={"owner<!channel>": INJECTIONS, "*k*": "_v_"})
    alert = samples.alert(
        title=INJECTIONS,
        summary=INJECTIONS + "\n> quoted\n&lt;!channel&gt;",
        scope=scope,
        kind="x",
        links=[Link(title="<!channel> *click*", url="https://safe.example/a?b=1&c=<2>|3")],
        status=AlertStatus.acknowledged,
        acknowledged_by="<!channel> *mallory*",
    )
    approval = samples.approval(
        title=INJECTIONS,
        summary=INJECTIONS,
        requester="<!subteam^S1> @everyone",
        approvers=["<@U1>", "*a*"],
        context={"<!here>": "<https://evil.example|x>", "list": ["*a*", "<b>"]},
        decided_by="<!channel>",
        rule="*rule*",
    )
    return samples.note(alert=alert, approval=approval, buttons=samples.buttons("h"))


@pytest.mark.parametrize("index", range(HOSTILE_VIEWS))
def test_event_text_cannot_inject_mentions_links_or_formatting(index: int) -> None:
    message = hostile_views(slack, _hostile_note(), INJECTIONS)[index]
    assert_valid(message)
    for text in mrkdwn_texts(message):
        leftover = OUR_MARKUP.sub("", text)
        assert "<" not in leftover and ">" not in leftover, text
        assert "<!" not in OUR_MARKUP.sub("", text)
        assert "@here" not in text and "@channel" not in text and "@everyone" not in text
        for marker in ("*bold*", "_it_", "~s~", "`c`", "*mallory*", "*click*", "*a*", "*rule*", "*k*"):
            assert marker not in text, (marker, text)
        assert "\n&gt;" not in text  # no block quote either
        assert re.search(r"&(?!amp;|lt;|gt;)", text) is None, text  # every & is an entity
    for plain in (d["text"] for d in walk(message) if d.get("type") == "plain_text"):
        assert re.search(r"<[!@#h]", plain) is None, plain
        assert "@here" not in plain and "@channel" not in plain, plain


def test_escape_keeps_ordinary_text_readable() -> None:
    assert (
        slack_blocks.escape("payments_api in eu-west-1: 5 > 3 & rising")
        == "payments_api in eu-west-1: 5 &gt; 3 &amp; rising"
    )
    assert slack_blocks.escape("*bold* _it_") == "\u2217bold\u2217 \u02cdit\u02cd"
    assert slack_blocks.escape("&lt;!channel&gt;") == "&amp;lt;!channel&amp;gt;"


def test_cut_never_splits_an_entity() -> None:
    assert slack_blocks.cut("ab&amp;cd", 5) == "ab…"
    assert slack_blocks.cut("abc", 3) == "abc"


def test_link_urls_cannot_break_out_of_their_markup() -> None:
    message = slack.render_alert(_hostile_note())
    links = [t for t in mrkdwn_texts(message) if t.startswith("🔗")]
    assert links == ["🔗 <https://safe.example/a?b=1&amp;c=%3C2%3E%7C3|&lt;!channel&gt; \u2217click\u2217>"]


# ---------------------------------------------------------------- purity


def test_cards_package_imports_no_io_libraries() -> None:
    for path in CARDS_DIR.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN), f"{path.name}: {name}"


def test_renderers_load_no_io_library_at_run_time() -> None:
    code = (
        "import sys, bot.cards.slack, bot.cards.teams, bot.cards.common;"
        f"loaded = [m for m in {(*FORBIDDEN, 'slack_sdk')!r} if m in sys.modules];"
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=CARDS_DIR.parents[1])


def test_models_used_in_samples_round_trip() -> None:
    # The samples stay valid domain objects (they are built through the models' validators).
    for note in NOTES.values():
        assert Notification.model_validate(note.model_dump()) == note
    assert all(isinstance(a, Approval) for a in samples.approval_list())
