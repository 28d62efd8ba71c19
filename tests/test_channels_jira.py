"""The Jira Cloud channel against a local fake of the REST API v3."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from pydantic import ValidationError

from core.channels.base import ChannelContext
from core.channels.errors import PermanentChannelError, TransientChannelError
from core.channels.jira import JiraChannel, JiraSettings
from core.models.approvals import ApprovalState
from tests.peers.http_sink import HttpSink, Reply
from tests.peers.notes import make_alert, make_approval_note, make_note

API_TOKEN = "ATATT3xFfGF0-jira-token-0123456789"
NONE_FOUND = Reply.json({"issues": [], "isLast": True})
CREATED = Reply.json({"id": "10042", "key": "OPS-42", "self": "https://x/rest/api/3/issue/10042"}, 201)


@pytest.fixture(autouse=True)
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIRA_TOKEN", API_TOKEN)


def jira(base_url: str, **settings: object) -> JiraChannel:
    data = {
        "base_url": base_url,
        "email": "bot@example.com",
        "api_token": "env:JIRA_TOKEN",
        "project": "OPS",
        "allow_private": True,
        "timeout": 2,
        **settings,
    }
    return JiraChannel("jira", JiraSettings.model_validate(data), ChannelContext())


def jira_sink() -> HttpSink:
    sink = HttpSink(Reply(404, '{"errorMessages":["not here"]}'))
    sink.always(NONE_FOUND, method="POST", path="/rest/api/3/search/jql")
    sink.always(CREATED, method="POST", path="/rest/api/3/issue")
    return sink


def texts(node: Any) -> list[str]:
    """Every text in an ADF tree, in order."""
    if isinstance(node, dict):
        own = [node["text"]] if node.get("type") == "text" else []
        return own + texts(node.get("content", []))
    if isinstance(node, list):
        return [t for child in node for t in texts(child)]
    return []


async def test_creates_an_issue_with_an_adf_description() -> None:
    async with jira_sink() as sink:
        channel = jira(sink.base_url, priorities={"critical": "Highest"}, fields={"components": [{"name": "api"}]})
        try:
            result = await channel.send(make_note())
        finally:
            await channel.close()
    search, create = sink.requests
    assert search.path == "/rest/api/3/search/jql"
    assert create.path == "/rest/api/3/issue"
    expected_auth = "Basic " + base64.b64encode(f"bot@example.com:{API_TOKEN}".encode()).decode()
    assert create.headers["Authorization"] == expected_auth
    fields = create.json()["fields"]
    assert fields["project"] == {"key": "OPS"}
    assert fields["issuetype"] == {"name": "Task"}
    assert fields["summary"] == "[CRITICAL] CVE-2024-0001 in <payments> & co"
    assert fields["priority"] == {"name": "Highest"}
    assert fields["components"] == [{"name": "api"}]
    label = channel.dedupe_label(make_note())
    assert fields["labels"] == ["ackbot", label]
    assert search.json()["jql"] == f'project = "OPS" AND labels = "{label}"'
    description = fields["description"]
    assert description["type"] == "doc" and description["version"] == 1
    # The summary (two lines, one hard break), the facts, the links, the ack links.
    assert [block["type"] for block in description["content"]] == ["paragraph", "bulletList", "paragraph", "paragraph"]
    assert {"type": "hardBreak"} in description["content"][0]["content"]
    words = texts(description)
    assert "A critical vulnerability was found." in words and "Upgrade libfoo to 1.2.3." in words
    assert "Tenant: " in words and "acme" in words
    assert all(word for word in words)  # ADF refuses empty text nodes
    ack_link = next(n for n in description["content"][-1]["content"] if n.get("text") == "Acknowledge")
    assert ack_link["marks"] == [{"type": "link", "attrs": {"href": "https://ackbot.example.com/ack/tok-ack-123"}}]
    assert result.message_ref == {"key": "OPS-42", "id": "10042", "url": f"{sink.base_url}/browse/OPS-42"}


async def test_summary_is_clipped_to_255() -> None:
    channel = jira("http://127.0.0.1:9")
    summary = channel.build_issue(make_note(alert=make_alert(title="y" * 600), approval=None))["fields"]["summary"]
    assert len(summary) == 255


async def test_a_retry_finds_the_issue_the_first_attempt_created() -> None:
    async with jira_sink() as sink:
        sink.enqueue(Reply.json({"issues": [{"id": "10042", "key": "OPS-42"}]}), path="/rest/api/3/search/jql")
        channel = jira(sink.base_url)
        try:
            result = await channel.send(make_note())
        finally:
            await channel.close()
    assert [r.path for r in sink.requests] == ["/rest/api/3/search/jql"]
    assert result.message_ref is not None and result.message_ref["key"] == "OPS-42"


async def test_without_dedupe_label_it_just_creates() -> None:
    async with jira_sink() as sink:
        channel = jira(sink.base_url, dedupe_label=False, labels=[])
        try:
            await channel.send(make_note())
        finally:
            await channel.close()
    [create] = sink.requests
    assert create.json()["fields"]["labels"] == []


async def test_update_comments_on_the_issue() -> None:
    async with HttpSink(Reply.json({"id": "777"}, 201)) as sink:
        channel = jira(sink.base_url)
        try:
            result = await channel.update(
                {"key": "OPS-42", "id": "10042"}, make_approval_note(ApprovalState.acknowledged)
            )
        finally:
            await channel.close()
    [got] = sink.requests
    assert (got.method, got.path) == ("POST", "/rest/api/3/issue/OPS-42/comment")
    body = got.json()["body"]
    assert body["type"] == "doc"
    assert texts(body)[0] == "ackbot: acknowledge by alice (approval acknowledged)"
    assert result.message_ref == {"key": "OPS-42", "id": "10042"}
    assert result.detail == {"comment_id": "777"}


async def test_update_refuses_a_reference_without_a_proper_key() -> None:
    channel = jira("http://127.0.0.1:9")
    with pytest.raises(PermanentChannelError, match="no issue key"):
        await channel.update({"key": "../../admin"}, make_note())


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_client_errors_are_permanent_and_quote_jira(status: int) -> None:
    answer = {"errorMessages": ["You do not have permission"], "errors": {"project": "project is required"}}
    async with HttpSink(Reply.json(answer, status)) as sink:
        channel = jira(sink.base_url)
        try:
            with pytest.raises(PermanentChannelError) as caught:
                await channel.send(make_note())
        finally:
            await channel.close()
    assert caught.value.status_code == status
    assert "You do not have permission; project: project is required" in str(caught.value)
    assert API_TOKEN not in str(caught.value)


@pytest.mark.parametrize(
    ("reply", "retry_after"),
    [
        (Reply(429, headers={"Retry-After": "9"}), 9.0),
        (Reply(503, headers={"Retry-After": "4"}), 4.0),
        (Reply(500), None),
    ],
)
async def test_rate_limits_and_server_errors_are_transient(reply: Reply, retry_after: float | None) -> None:
    async with jira_sink() as sink:
        sink.enqueue(reply, path="/rest/api/3/issue")
        channel = jira(sink.base_url)
        try:
            with pytest.raises(TransientChannelError) as caught:
                await channel.send(make_note())
        finally:
            await channel.close()
    assert caught.value.retry_after == retry_after


async def test_a_time_out_is_transient() -> None:
    async with HttpSink(Reply.hang(5)) as sink:
        channel = jira(sink.base_url, timeout=0.3)
        try:
            with pytest.raises(TransientChannelError, match="timed out"):
                await channel.send(make_note())
        finally:
            await channel.close()


@pytest.mark.parametrize(
    ("settings", "loc"),
    [
        ({"api_token": "plain-token"}, ("api_token",)),
        ({"project": "has space"}, ("project",)),
        ({"labels": ["two words"]}, ("labels",)),
        ({"fields": {"summary": "x"}}, ("fields",)),
        ({"priorities": {"urgent": "Highest"}}, ("priorities", "urgent", "[key]")),
        ({"base_url": "example.atlassian.net"}, ("base_url",)),
        ({"whatever": 1}, ("whatever",)),
    ],
)
def test_settings_are_checked(settings: dict[str, object], loc: tuple[str, ...]) -> None:
    data = {"base_url": "https://x.atlassian.net", "email": "b@x.com", "api_token": "env:T", "project": "OPS"}
    with pytest.raises(ValidationError) as caught:
        JiraSettings.model_validate({**data, **settings})
    assert caught.value.errors()[0]["loc"] == loc
