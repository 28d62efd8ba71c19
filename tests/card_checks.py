"""What the Slack and Teams card tests share: golden files, the sample inputs (ordinary, huge, hostile) and the views
every renderer has, and the official Adaptive Card schema that Teams cards are checked against."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import jsonschema

from bot.cards import samples
from core.channels.base import Notification
from core.models.approvals import Approval, ApprovalState
from core.models.common import Severity
from core.models.deliveries import DeliveryPurpose
from core.models.events import Alert, Link, Scope

GOLDEN_ROOT = Path(__file__).parent / "golden" / "cards"

View = dict[str, Any]


class Renderer(Protocol):
    """The functions bot/cards/slack.py and bot/cards/teams.py both have (Teams' take more keyword options)."""

    def render_alert(self, note: Notification) -> View: ...
    def render_approval(self, note: Notification) -> View: ...
    def render_decided(self, note: Notification) -> View: ...
    def render(self, note: Notification) -> View: ...
    def render_digest(
        self, title: str, groups: dict[str, int], items: list[Alert], total: int, link: str | None
    ) -> View: ...
    def render_alert_list(self, alerts: list[Alert], title: str) -> View: ...
    def render_approval_list(self, approvals: list[Approval]) -> View: ...
    def render_text(self, text: str) -> View: ...


def sample_views(renderer: Renderer, text: str) -> dict[str, View]:
    """Every golden view a renderer makes: each sample notification through render(), the lists and a reply."""
    views = {name: renderer.render(note) for name, note in samples.notifications().items()}
    views["digest"] = renderer.render_digest(**samples.digest_args())
    views["alert_list"] = renderer.render_alert_list(samples.alert_list(), "Open alerts")
    views["alert_list_empty"] = renderer.render_alert_list([], "Open alerts")
    views["approval_list"] = renderer.render_approval_list(samples.approval_list())
    views["approval_list_empty"] = renderer.render_approval_list([])
    views["text"] = renderer.render_text(text)
    return views


def assert_golden(platform: str, name: str, actual: View) -> None:
    """Compare with golden/cards/<platform>/<name>.json; ACKBOT_UPDATE_GOLDEN=1 rewrites it instead."""
    path = GOLDEN_ROOT / platform / f"{name}.json"
    text = json.dumps(actual, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    if os.environ.get("ACKBOT_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"missing golden file {path}; run with ACKBOT_UPDATE_GOLDEN=1 to create it"
    assert json.loads(path.read_text(encoding="utf-8")) == json.loads(text), f"{name} differs from {path}"


def walk(node: Any) -> list[dict[str, Any]]:
    """Every dict inside node, depth first."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found.extend(walk(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(walk(item))
    return found


def huge_note() -> Notification:
    """A notification far beyond every platform limit: long texts, 300 labels and context keys, 500 approvers."""
    labels = {f"label_{i:03d}": "v" * 1024 for i in range(300)}
    scope = Scope.model_construct(namespace="n" * 256, repo="r" * 512, digest="d" * 256, labels=labels)
    alert = samples.alert(
        title="T" * 10_000,
        summary="S" * 100_000,
        scope=scope,
        links=[Link(title="L" * 200, url="https://example.com/" + "p" * 1900) for _ in range(20)],
    )
    approval = samples.approval(
        title="A" * 10_000,
        summary="Z" * 100_000,
        requester="q" * 5000,
        approvers=[f"approver{i}" for i in range(500)],
        context={f"key{i}": "x" * 3000 for i in range(300)},
    )
    return samples.note(alert=alert, approval=approval, buttons=samples.buttons("x" * 1900), suppressed_count=10**6)


# Labels huge_note() carries beside namespace, repo and digest.
HUGE_NOTE_FIELDS = 303


def many_alerts(n: int) -> list[Alert]:
    """n alerts with long titles, of every severity in turn."""
    return [
        samples.alert(id=f"al_{i:04d}", title=f"Alert {i} " + "t" * 300, severity=list(Severity)[i % 5])
        for i in range(n)
    ]


def hostile_views(renderer: Renderer, note: Notification, injections: str) -> list[View]:
    """Every view of a notification whose every text tries to inject markup, and lists, digest and reply of it."""
    assert note.approval is not None and note.alert is not None
    denied = note.model_copy(update={"approval": note.approval.model_copy(update={"state": ApprovalState.denied})})
    alert_only = note.model_copy(update={"approval": None, "purpose": DeliveryPurpose.update})
    return [
        renderer.render_alert(note),
        renderer.render_approval(note),
        renderer.render_decided(denied),
        renderer.render_decided(alert_only),
        renderer.render_alert_list([note.alert], injections),
        renderer.render_approval_list([note.approval]),
        renderer.render_digest(injections, {injections: 1}, [note.alert], 1, None),
        renderer.render_text(injections),
    ]


HOSTILE_VIEWS = 8


# The official schemas, kept in the repository (tests/schemas/README.md says where they come from).
SCHEMAS = Path(__file__).resolve().parent / "schemas"


@cache
def adaptive_card_validator() -> jsonschema.Draft6Validator:
    """The official Adaptive Card 1.5 schema (a missing file fails the test that asks)."""
    schema = json.loads((SCHEMAS / "adaptive-card-1.5.json").read_text(encoding="utf-8"))
    jsonschema.Draft6Validator.check_schema(schema)
    return jsonschema.Draft6Validator(schema)
