"""Teams Adaptive Card 1.5 renderers: golden files, the official schema, size limits, truncation and escaping."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest

from bot.cards import samples, teams
from core.channels.base import Button, Notification
from core.models.deliveries import DeliveryPurpose
from core.models.events import AlertStatus, Scope
from tests.card_checks import (
    HOSTILE_VIEWS,
    HUGE_NOTE_FIELDS,
    adaptive_card_validator,
    assert_golden,
    hostile_views,
    huge_note,
    many_alerts,
    sample_views,
    walk,
)

NOTES = samples.notifications()


def _outputs() -> dict[str, dict[str, Any]]:
    """Every golden card, and the alert card with link buttons (as webhooks get it)."""
    outputs = sample_views(teams, "Muted **payments** for 1h.\nSee [the docs](https://x.example).")
    outputs["alert_firing_link_buttons"] = teams.render(NOTES["alert_firing"], link_buttons=True)
    return outputs


OUTPUTS = _outputs()


def assert_valid(card: dict[str, Any], max_bytes: int = teams.DEFAULT_MAX_BYTES) -> None:
    """What Teams would check: the 1.5 schema (unknown properties rejected) and the size limit."""
    errors = sorted(adaptive_card_validator().iter_errors(card), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message[:300]}" for e in errors[:5])
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.5"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert len(json.dumps(card)) <= max_bytes
    assert len(json.dumps(card)) <= teams.BOT_MESSAGE_MAX_BYTES
    ids = [d["id"] for d in walk(card.get("actions", [])) if "id" in d]
    assert len(ids) == len(set(ids))


def markdown_texts(card: dict[str, Any]) -> list[str]:
    """Every string Teams runs through markdown: TextBlocks and facts."""
    texts = [d["text"] for d in walk(card) if d.get("type") == "TextBlock"]
    for d in walk(card):
        if d.get("type") == "FactSet":
            for fact in d["facts"]:
                texts.extend((fact["title"], fact["value"]))
    return texts


# ---------------------------------------------------------------- golden files and the schema


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_golden(name: str) -> None:
    assert_golden("teams", name, OUTPUTS[name])


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_every_card_validates_against_the_1_5_schema(name: str) -> None:
    assert_valid(OUTPUTS[name])


@pytest.mark.parametrize("name", sorted(NOTES))
def test_each_view_function_validates_for_every_sample(name: str) -> None:
    for view in (teams.render_alert, teams.render_approval, teams.render_decided):
        assert_valid(view(NOTES[name]))


def test_schema_catches_what_it_should() -> None:
    # Guards the guard: an unknown property or a wrong type fails validation.
    card = dict(OUTPUTS["alert_firing"], msteams={"width": "Full"})
    assert list(adaptive_card_validator().iter_errors(card))
    assert list(adaptive_card_validator().iter_errors(dict(OUTPUTS["alert_firing"], body="nope")))


def test_rendering_is_deterministic() -> None:
    assert _outputs() == OUTPUTS


def test_wrap_for_workflows() -> None:
    card = OUTPUTS["alert_firing"]
    assert teams.wrap_for_workflows(card) == {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


# ---------------------------------------------------------------- actions, refresh, dispatch


@pytest.mark.parametrize("name", ["alert_firing", "approval_pending", "approval_escalated"])
def test_choice_buttons_are_universal_actions_with_submit_fallback(name: str) -> None:
    actions = OUTPUTS[name]["actions"]
    assert [a["verb"] for a in actions] == ["acknowledge", "deny", "escalate"]
    for action, button in zip(actions, NOTES[name].buttons, strict=True):
        assert action["type"] == "Action.Execute"
        assert action["data"] == {"token": button.token, "choice": button.choice}
        assert action["fallback"]["type"] == "Action.Submit"
        assert action["fallback"]["data"] == action["data"]
    assert actions[0]["style"] == "positive" and actions[1]["style"] == "destructive"
    assert "style" not in actions[2]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("alert_firing", {"alert_id": "al_01HXAMPLE"}),
        ("alert_resolved", {"alert_id": "al_01HXAMPLE"}),
        ("approval_pending", {"approval_id": "ap_01HXAMPLE"}),
        ("approval_with_alert", {"approval_id": "ap_01HXAMPLE"}),
        ("approval_denied", {"approval_id": "ap_01HXAMPLE"}),
    ],
)
def test_cards_carry_refresh(name: str, data: dict[str, str]) -> None:
    assert OUTPUTS[name]["refresh"] == {
        "action": {"type": "Action.Execute", "verb": "refresh", "data": data},
        "userIds": [],
    }


def test_no_refresh_without_a_subject_or_for_webhook_cards() -> None:
    assert "refresh" not in OUTPUTS["test_notice"]
    assert "refresh" not in OUTPUTS["event_only"]
    assert "refresh" not in OUTPUTS["alert_firing_link_buttons"]


def test_link_buttons_open_the_web_ack_page() -> None:
    actions = OUTPUTS["alert_firing_link_buttons"]["actions"]
    assert [a["type"] for a in actions] == ["Action.OpenUrl"] * 3
    assert [a["url"] for a in actions] == [b.url for b in NOTES["alert_firing"].buttons]


@pytest.mark.parametrize(
    ("name", "has_actions", "banner_style"),
    [
        ("alert_firing", True, "attention"),
        ("alert_low_no_buttons", False, "accent"),
        ("approval_pending", True, "accent"),
        ("approval_escalated", True, "accent"),
        ("approval_acknowledged", False, "good"),
        ("approval_denied", False, "attention"),
        ("approval_expired", False, "emphasis"),
        ("alert_acknowledged", False, "good"),
        ("alert_resolved", False, "good"),
    ],
)
def test_render_picks_the_view(name: str, has_actions: bool, banner_style: str) -> None:
    card = teams.render(NOTES[name])
    assert ("actions" in card) is has_actions
    assert card["body"][0]["style"] == banner_style


def test_acknowledged_alert_first_notification_is_an_alert_view() -> None:
    note = NOTES["alert_acknowledged"].model_copy(update={"purpose": DeliveryPurpose.notify})
    assert teams.render(note)["body"][0]["style"] == "attention"


def test_alert_card_shows_facts_links_and_suppressed() -> None:
    card = OUTPUTS["alert_firing"]
    facts = {f["title"]: f["value"] for d in walk(card) if d.get("type") == "FactSet" for f in d["facts"]}
    assert facts["Namespace"] == "payments" and facts["service_name"] == "payments_api"
    links = [d for d in walk(card) if d.get("type") == "Action.OpenUrl"]
    assert [link["title"] for link in links] == ["Runbook", "Dashboard"]
    assert "🔕 3 similar notifications suppressed" in markdown_texts(card)


def test_time_left_comes_from_the_notification_not_the_clock() -> None:
    note = NOTES["approval_pending"]
    assert "expires in 45m" in json.dumps(teams.render(note), ensure_ascii=False)
    later = note.model_copy(update={"created_at": samples.T0 + timedelta(minutes=70)})
    assert "expired 10m ago" in json.dumps(teams.render(later), ensure_ascii=False)


def test_decided_card_uses_localised_date() -> None:
    texts = markdown_texts(OUTPUTS["approval_denied"])
    assert "⛔ **Denied** by bob · {{DATE(2024-05-01T12:20:00Z, SHORT)}} {{TIME(2024-05-01T12:20:00Z)}}" in texts


# ---------------------------------------------------------------- size and truncation


@pytest.mark.parametrize("view", ["render_alert", "render_approval", "render_decided", "render"])
@pytest.mark.parametrize("max_bytes", [teams.DEFAULT_MAX_BYTES, teams.WORKFLOWS_CARD_MAX_BYTES])
def test_huge_notification_fits(view: str, max_bytes: int) -> None:
    card = getattr(teams, view)(huge_note(), max_bytes=max_bytes)
    assert_valid(card, max_bytes)
    assert "more" in json.dumps(card)
    if view != "render_decided":
        assert len(card["actions"]) == 3  # the buttons survive every cut


def test_workflows_message_stays_under_28_kb() -> None:
    card = teams.render_for_workflows(huge_note())
    assert_valid(card, teams.WORKFLOWS_CARD_MAX_BYTES)
    assert "refresh" not in card and {a["type"] for a in card["actions"]} == {"Action.OpenUrl"}
    wrapped = teams.wrap_for_workflows(card)
    assert len(json.dumps(wrapped)) <= teams.WORKFLOWS_MAX_BYTES
    assert len(json.dumps(wrapped, ensure_ascii=False).encode()) <= teams.WORKFLOWS_MAX_BYTES


def test_huge_alert_counts_the_labels_left_out() -> None:
    card = teams.render_alert(huge_note().model_copy(update={"approval": None}))
    assert_valid(card)
    shown = sum(len(d["facts"]) for d in walk(card) if d.get("type") == "FactSet")
    hidden = int(re.search(r"and (\d+) more labels", json.dumps(card))[1])  # type: ignore[index]
    assert shown + hidden == HUGE_NOTE_FIELDS


def test_absurdly_small_limit_still_gives_a_valid_card() -> None:
    card = teams.render(huge_note(), max_bytes=600)
    assert_valid(card, max_bytes=teams.DEFAULT_MAX_BYTES)
    assert "too large to show in full" in json.dumps(card)


@pytest.mark.parametrize("max_bytes", [teams.DEFAULT_MAX_BYTES, teams.WORKFLOWS_CARD_MAX_BYTES])
def test_500_item_lists_fit(max_bytes: int) -> None:
    alert_list = teams.render_alert_list(many_alerts(500), "All alerts", max_bytes=max_bytes)
    assert_valid(alert_list, max_bytes)
    rows = [t for t in markdown_texts(alert_list) if "**Alert" in t]
    hidden = int(re.search(r"and (\d+) more alerts", json.dumps(alert_list))[1])  # type: ignore[index]
    assert len(rows) + hidden == 500

    approvals = [samples.approval(id=f"ap_{i:04d}", title="x" * 500) for i in range(500)]
    approval_list = teams.render_approval_list(approvals, max_bytes=max_bytes)
    assert_valid(approval_list, max_bytes)
    assert "more approvals" in json.dumps(approval_list)

    groups = {f"group-{i}": i for i in range(300)}
    digest = teams.render_digest(
        "D" * 500, groups, many_alerts(500), 10_000, "https://a.example/d", max_bytes=max_bytes
    )
    assert_valid(digest, max_bytes)
    assert "more groups" in json.dumps(digest) and "more alerts" in json.dumps(digest)


def test_huge_text_reply_fits() -> None:
    card = teams.render_text("x" * 100_000)
    assert_valid(card)
    assert card["body"][0]["text"].endswith("…")


# ---------------------------------------------------------------- escaping

INJECTIONS = "[click](https://evil.example) **bold** *it* _it_ ~s~ `c` <at>x</at> \\*"


def _hostile_note() -> Notification:
    alert = samples.alert(
        title=INJECTIONS,
        summary=INJECTIONS + "\n- item\n1. first\n> quote\n# heading",
        scope=Scope(namespace=INJECTIONS[:256], labels={"[k](https://evil.example)": INJECTIONS}),
        status=AlertStatus.acknowledged,
        acknowledged_by="**mallory**",
    )
    approval = samples.approval(
        title=INJECTIONS,
        summary=INJECTIONS,
        requester="[me](https://evil.example)",
        context={"**k**": INJECTIONS},
        decided_by="[bob](https://evil.example)",
    )
    return samples.note(alert=alert, approval=approval, buttons=samples.buttons("h"))


@pytest.mark.parametrize("index", range(HOSTILE_VIEWS))
def test_event_text_cannot_add_links_or_styling(index: int) -> None:
    card = hostile_views(teams, _hostile_note(), INJECTIONS)[index]
    assert_valid(card)
    for text in markdown_texts(card):
        # Every markdown-active character from the event is preceded by a backslash.
        assert re.search(r"(?<!\\)\[", text) is None, text
        assert re.search(r"(?<!\\)`", text) is None, text
        assert re.search(r"(?<!\\)~", text) is None, text
        assert re.search(r"(?<![\\*])\*(?!\*)", text) is None, text  # a lone * (ours are ** pairs)
        assert re.search(r"(?m)^(?:[-+#>]|\d+\.) ", text) is None, text  # no list, heading or quote


def test_escape_leaves_ordinary_text_alone() -> None:
    assert teams.escape("payments_api in eu-west-1: 5 > 3 & rising") == "payments_api in eu-west-1: 5 > 3 & rising"
    assert teams.escape("[a](b) **c** _d_") == "\\[a\\](b) \\*\\*c\\*\\* \\_d\\_"
    assert teams.escape("- x\n1. y") == "\\- x\n1\\. y"


def test_long_tokens_are_kept_whole() -> None:
    # A token cut short is useless; Teams has no per-field limit, so it travels as is.
    token = "t" * 5000
    note = NOTES["alert_firing"].model_copy(
        update={"buttons": [Button(choice="acknowledge", label="", token=token, url="https://x.example/ack")]}
    )
    card = teams.render(note)
    assert_valid(card)
    assert card["actions"][0]["data"]["token"] == token
