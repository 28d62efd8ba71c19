"""Jira Cloud through REST API v3: one issue per notification, comments for what happens next.

``POST {base_url}/rest/api/3/issue`` creates the issue, its description in Atlassian Document Format (ADF);
``POST {base_url}/rest/api/3/issue/{key}/comment`` adds the updates (an alert resolved, an approval decided).
Basic auth with the account's email and an API token. 401, 403, 400 and 404 are permanent; 429 and 5xx
transient, honouring Retry-After.

Jira has no idempotency key for creating issues, so a create that timed out after Jira acted on it would
make a duplicate on retry. With ``dedupe_label`` (the default) each issue gets the label
``ackbot-<hash of the idempotency key>`` and a create is preceded by a search for it; Jira's search index
lags by seconds, which narrows the window rather than closing it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, ClassVar

from pydantic import Field, field_validator

from core.channels.base import HttpChannel, HttpChannelSettings, Notification, SendResult, json_bytes
from core.channels.errors import PermanentChannelError
from core.models.common import Severity
from core.secrets import SecretRef

_LABEL_RE = re.compile(r"^\S{1,255}$")

# ---------------------------------------------------------------- Atlassian Document Format


def adf_text(text: str, *, strong: bool = False, href: str | None = None) -> dict[str, Any]:
    """An ADF text node, bold and/or a link."""
    node: dict[str, Any] = {"type": "text", "text": text}
    marks: list[dict[str, Any]] = []
    if strong:
        marks.append({"type": "strong"})
    if href:
        marks.append({"type": "link", "attrs": {"href": href}})
    if marks:
        node["marks"] = marks
    return node


def adf_paragraph(text: str) -> list[dict[str, Any]]:
    """Paragraphs for a plain text: blank lines separate paragraphs, single newlines become hard breaks."""
    blocks = []
    for chunk in re.split(r"\n\s*\n", text.strip()):
        content: list[dict[str, Any]] = []
        for i, line in enumerate(chunk.split("\n")):
            if i:
                content.append({"type": "hardBreak"})
            if line:  # ADF refuses empty text nodes
                content.append(adf_text(line))
        if content:
            blocks.append({"type": "paragraph", "content": content})
    return blocks


def adf_doc(content: list[dict[str, Any]]) -> dict[str, Any]:
    """An ADF document around block nodes."""
    return {"type": "doc", "version": 1, "content": content}


def describe(note: Notification, *, heading: str | None = None) -> dict[str, Any]:
    """The notification as an ADF document: summary, facts, links, and the web ack links."""
    content: list[dict[str, Any]] = []
    if heading:
        content.append({"type": "paragraph", "content": [adf_text(heading, strong=True)]})
    if note.summary:
        content.extend(adf_paragraph(note.summary[: JiraChannel.MAX_DESCRIPTION_TEXT]))
    content.append(
        {
            "type": "bulletList",
            "content": [
                {
                    "type": "listItem",
                    "content": [
                        {"type": "paragraph", "content": [adf_text(f"{label}: ", strong=True), adf_text(value)]}
                    ],
                }
                for label, value in note.facts()
                if value
            ],
        }
    )
    inline: list[dict[str, Any]] = []
    for title, url in note.links:
        if inline:
            inline.append(adf_text(" · "))
        inline.append(adf_text(title, href=url))
    if inline:
        content.append({"type": "paragraph", "content": [adf_text("Links: ", strong=True), *inline]})
    buttons: list[dict[str, Any]] = []
    for button in note.buttons:
        if buttons:
            buttons.append(adf_text(" · "))
        buttons.append(adf_text(button.label or button.choice, href=button.url))
    if buttons:
        content.append({"type": "paragraph", "content": [adf_text("Decide in ackbot: ", strong=True), *buttons]})
    return adf_doc(content)


# ---------------------------------------------------------------- the channel


class JiraSettings(HttpChannelSettings):
    """The Jira site, the account, the project and what issues look like."""

    base_url: str = Field(description="the site, e.g. https://example.atlassian.net")
    email: str = Field(min_length=3, max_length=255, description="the Atlassian account the API token belongs to")
    api_token: SecretRef
    project: str = Field(min_length=1, max_length=50, pattern=r"^[A-Za-z][A-Za-z0-9_]*$", description="project key")
    issue_type: str = Field(default="Task", min_length=1, max_length=100)
    labels: list[str] = Field(default_factory=lambda: ["ackbot"], max_length=20)
    priorities: dict[Severity, str] = Field(
        default_factory=dict, description="severity -> priority name, e.g. {critical: Highest}; unset: Jira default"
    )
    fields: dict[str, Any] = Field(
        default_factory=dict, description="more issue fields as Jira wants them, e.g. components, customfield_10010"
    )
    dedupe_label: bool = Field(default=True, description="label issues by delivery and search before creating")

    @field_validator("base_url")
    @classmethod
    def _http_base(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with https:// (or http://)")
        return url.rstrip("/")

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: list[str]) -> list[str]:
        for label in labels:
            if not _LABEL_RE.match(label):
                raise ValueError(f"Jira labels cannot contain spaces: {label!r}")
        return labels

    @field_validator("fields")
    @classmethod
    def _no_core_fields(cls, fields: dict[str, Any]) -> dict[str, Any]:
        clash = sorted({"project", "issuetype", "summary", "description"} & set(fields))
        if clash:
            raise ValueError(f"set {', '.join(clash)} through the channel's own settings, not fields")
        return fields


class JiraChannel(HttpChannel):
    """Creates an issue per notification; updates become comments on it."""

    type: ClassVar[str] = "jira"
    Settings = JiraSettings
    settings: JiraSettings
    supports_update: ClassVar[bool] = True
    # An issue is a record, still worth making when Jira is back after a long maintenance: retried for twelve
    # hours, no count of tries, 5 s doubling to 5 minutes between them.
    RETRY_FOR: ClassVar[timedelta] = timedelta(hours=12)
    MAX_ATTEMPTS: ClassVar[int | None] = None
    BACKOFF_BASE: ClassVar[float] = 5.0
    BACKOFF_MAX: ClassVar[float] = 300.0
    # Jira Cloud's limits are cost-based and per tenant; a few requests a second stays well clear.
    RATE_PER_SECOND: ClassVar[float] = 3.0
    # Jira's limits: summary 255 characters; text fields about 32 767 characters, ADF structure included.
    MAX_SUMMARY = 255
    MAX_DESCRIPTION_TEXT = 20000

    def _headers(self) -> dict[str, str]:
        credentials = f"{self.settings.email}:{self.resolve_secret(self.settings.api_token)}".encode()
        encoded = base64.b64encode(credentials).decode("ascii")
        # The encoded form is a secret of its own: were it ever echoed, redaction must catch it too.
        self._secret_values.add(encoded)
        return {"Authorization": f"Basic {encoded}", "Accept": "application/json"}

    def dedupe_label(self, note: Notification) -> str:
        """The label that marks the issue a delivery created."""
        return "ackbot-" + hashlib.sha256(note.idempotency_key.encode("utf-8")).hexdigest()[:24]

    def summary(self, note: Notification) -> str:
        """'[SEVERITY] title', at most 255 characters, on one line."""
        tag = f"[{note.severity.value.upper()}] " if note.severity else ""
        text = " ".join(f"{tag}{note.title}".split())
        return text if len(text) <= self.MAX_SUMMARY else text[: self.MAX_SUMMARY - 1] + "…"

    def build_issue(self, note: Notification) -> dict[str, Any]:
        """The create-issue document."""
        labels = list(self.settings.labels)
        if self.settings.dedupe_label:
            labels.append(self.dedupe_label(note))
        fields: dict[str, Any] = {
            **self.settings.fields,
            "project": {"key": self.settings.project},
            "issuetype": {"name": self.settings.issue_type},
            "summary": self.summary(note),
            "description": describe(note),
            "labels": labels,
        }
        if note.severity is not None and note.severity in self.settings.priorities:
            fields["priority"] = {"name": self.settings.priorities[note.severity]}
        return {"fields": fields}

    def update_heading(self, note: Notification) -> str:
        """The first line of a comment: what changed."""
        if note.approval is not None and note.approval.decided_by:
            choice = note.approval.decided_choice.value if note.approval.decided_choice else note.approval.state
            return f"ackbot: {choice} by {note.approval.decided_by} (approval {note.approval.state.value})"
        return f"ackbot: now {note.status}"

    def describe_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> str:
        """Jira answers {"errorMessages": [...], "errors": {field: message}}: quote both."""
        try:
            document = json.loads(body)
        except ValueError:
            return super().describe_error(status, body, headers)
        if not isinstance(document, dict):
            return super().describe_error(status, body, headers)
        parts = [str(m) for m in document.get("errorMessages") or []]
        errors = document.get("errors")
        if isinstance(errors, dict):
            parts.extend(f"{field}: {message}" for field, message in errors.items())
        return "; ".join(parts)[: self.MAX_ERROR_DETAIL] or super().describe_error(status, body, headers)

    def _ref(self, key: str, issue_id: Any) -> dict[str, Any]:
        return {"key": key, "id": str(issue_id) if issue_id is not None else None, "url": self._browse(key)}

    def _browse(self, key: str) -> str:
        return f"{self.settings.base_url}/browse/{key}"

    async def _find_existing(self, note: Notification, headers: dict[str, str]) -> dict[str, Any] | None:
        jql = f'project = "{self.settings.project}" AND labels = "{self.dedupe_label(note)}"'
        response = await self.request(
            "POST",
            f"{self.settings.base_url}/rest/api/3/search/jql",
            body=json_bytes({"jql": jql, "fields": ["key"], "maxResults": 1}),
            headers=headers,
        )
        answer = response.json()
        issues = answer.get("issues") if isinstance(answer, dict) else None
        if isinstance(issues, list) and issues and isinstance(issues[0], dict) and issues[0].get("key"):
            return self._ref(str(issues[0]["key"]), issues[0].get("id"))
        return None

    async def send(self, note: Notification) -> SendResult:
        """Create the issue (or find the one an earlier attempt of this delivery created)."""
        headers = self._headers()
        if self.settings.dedupe_label:
            existing = await self._find_existing(note, headers)
            if existing is not None:
                return SendResult(message_ref=existing, status_code=200, detail={"existing": True})
        response = await self.request(
            "POST",
            f"{self.settings.base_url}/rest/api/3/issue",
            body=json_bytes(self.build_issue(note)),
            headers=headers,
        )
        answer = response.json()
        if not isinstance(answer, dict) or not answer.get("key"):
            raise PermanentChannelError(f"jira channel {self.name!r}: the create answer named no issue key")
        return SendResult(message_ref=self._ref(str(answer["key"]), answer.get("id")), status_code=response.status)

    async def update(self, message_ref: Mapping[str, Any], note: Notification) -> SendResult:
        """Comment on the issue with the new state."""
        key = message_ref.get("key")
        if not key or not re.match(r"^[A-Za-z][A-Za-z0-9_]*-\d+$", str(key)):
            raise PermanentChannelError(f"jira channel {self.name!r}: no issue key to comment on")
        body = {"body": describe(note, heading=self.update_heading(note))}
        response = await self.request(
            "POST",
            f"{self.settings.base_url}/rest/api/3/issue/{key}/comment",
            body=json_bytes(body),
            headers=self._headers(),
        )
        answer = response.json()
        comment_id = answer.get("id") if isinstance(answer, dict) else None
        return SendResult(
            message_ref=dict(message_ref),
            status_code=response.status,
            detail={"comment_id": str(comment_id)} if comment_id else {},
        )
