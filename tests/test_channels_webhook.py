"""The signed webhook channel against a real local receiver."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.channels import signing
from core.channels.base import ChannelContext
from core.channels.errors import PermanentChannelError, TransientChannelError
from core.channels.webhook import WebhookChannel, WebhookSettings
from core.models.approvals import ApprovalState
from core.models.deliveries import DeliveryPurpose
from tests.peers.http_sink import HttpSink, Reply
from tests.peers.notes import make_approval, make_approval_note, make_note

SECRET = "whsec-webhook-0123456789"
TOKEN = "bearer-token-abcdef0123456789"


@pytest.fixture(autouse=True)
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)


def webhook(url: str | None, **settings: object) -> WebhookChannel:
    data = {"url": url, "secret": "env:HOOK_SECRET", "allow_private": True, "timeout": 2, **settings}
    return WebhookChannel("hook", WebhookSettings.model_validate(data), ChannelContext(origin="origin-1"))


async def test_payload_shape_headers_and_signature() -> None:
    async with HttpSink(Reply(204)) as sink:
        channel = webhook(sink.url("/hook"))
        try:
            result = await channel.send(make_note())
        finally:
            await channel.close()
    [got] = sink.requests
    assert (got.method, got.path) == ("POST", "/hook")
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Ackbot-Delivery-Id"] == "idem-dl_1"
    assert got.headers["X-Ackbot-Origin"] == "origin-1"
    assert got.headers["X-Ackbot-Type"] == "notify"
    assert signing.verify(SECRET, got.body, got.headers["X-Ackbot-Signature"]) > 0
    body = got.json()
    assert set(body) == {
        "version", "type", "delivery_id", "idempotency_key", "tenant", "channel", "target", "title", "summary",
        "severity", "status", "alert", "event", "approval", "buttons", "suppressed_count", "created_at", "in_reply_to",
    }  # fmt: skip
    assert body["version"] == 1 and body["type"] == "notify"
    assert body["delivery_id"] == "dl_1" and body["tenant"] == "acme"
    assert body["severity"] == "critical" and body["status"] == "open"
    assert body["alert"]["fingerprint"] == "fp-0123456789abcdef"
    assert body["alert"]["scope"]["labels"] == {"team": "pay"}
    assert body["event"]["id"] == "ev_1"
    assert body["approval"] is None
    assert body["buttons"] == [
        {
            "choice": "acknowledge",
            "label": "Acknowledge",
            "url": "https://ackbot.example.com/ack/tok-ack-123",
            "token": "tok-ack-123",
        },
        {
            "choice": "deny",
            "label": "Deny",
            "url": "https://ackbot.example.com/ack/tok-deny-456",
            "token": "tok-deny-456",
        },
    ]
    assert body["suppressed_count"] == 2
    assert result.status_code == 204
    assert result.message_ref == {"delivery_id": "dl_1", "idempotency_key": "idem-dl_1"}


async def test_retries_keep_the_delivery_id_and_each_attempt_is_freshly_signed() -> None:
    async with HttpSink() as sink:
        sink.enqueue(Reply(503))
        channel = webhook(sink.url("/hook"))
        try:
            with pytest.raises(TransientChannelError):
                await channel.send(make_note())
            await channel.send(make_note())
        finally:
            await channel.close()
    first, second = sink.requests
    assert first.headers["X-Ackbot-Delivery-Id"] == second.headers["X-Ackbot-Delivery-Id"] == "idem-dl_1"
    assert first.body == second.body
    for got in (first, second):
        signing.verify(SECRET, got.body, got.headers["X-Ackbot-Signature"])


async def test_put_extra_headers_and_secret_headers() -> None:
    async with HttpSink() as sink:
        channel = webhook(
            sink.url("/things/1"),
            method="PUT",
            headers={"X-Team": "payments"},
            secret_headers={"Authorization": "env:HOOK_TOKEN"},
        )
        try:
            await channel.send(make_note())
        finally:
            await channel.close()
    [got] = sink.requests
    assert got.method == "PUT"
    assert got.headers["X-Team"] == "payments"
    assert got.headers["Authorization"] == TOKEN


async def test_url_may_be_a_secret_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    async with HttpSink() as sink:
        monkeypatch.setenv("HOOK_URL", sink.url("/hooks/T0/tokentokentokentoken"))
        channel = webhook("env:HOOK_URL")
        try:
            await channel.send(make_note())
        finally:
            await channel.close()
    assert sink.requests[0].path == "/hooks/T0/tokentokentokentoken"


async def test_callback_sends_the_approvals_body_to_the_callback_url() -> None:
    async with HttpSink() as sink:
        approval = make_approval(state=ApprovalState.acknowledged, callback_url=sink.url("/ci/callback"))
        body = {"approval_id": "ap_1", "decision": "acknowledge", "by": "alice"}
        note = make_approval_note(
            ApprovalState.acknowledged, purpose=DeliveryPurpose.callback, approval=approval, extra={"body": body}
        )
        channel = webhook(None)
        try:
            await channel.send(note)
        finally:
            await channel.close()
    [got] = sink.requests
    assert got.path == "/ci/callback"
    assert got.json() == body
    assert got.headers["X-Ackbot-Type"] == "callback"
    signing.verify(SECRET, got.body, got.headers["X-Ackbot-Signature"])


async def test_without_url_only_callbacks_can_be_delivered() -> None:
    channel = webhook(None)
    with pytest.raises(PermanentChannelError, match="no url"):
        await channel.send(make_note())


async def test_update_says_which_delivery_it_follows() -> None:
    async with HttpSink() as sink:
        channel = webhook(sink.url("/hook"))
        note = make_approval_note(ApprovalState.acknowledged)
        try:
            await channel.update({"delivery_id": "dl_0"}, note)
        finally:
            await channel.close()
    body = sink.requests[0].json()
    assert body["type"] == "update" and body["in_reply_to"] == "dl_0"
    assert body["status"] == "acknowledged"
    assert body["approval"]["decided_by"] == "alice"


@pytest.mark.parametrize(
    ("reply", "error", "retry_after"),
    [
        (Reply(429, headers={"Retry-After": "12"}), TransientChannelError, 12.0),
        (Reply(500, "boom"), TransientChannelError, None),
        (Reply(400, "bad"), PermanentChannelError, None),
        (Reply(404), PermanentChannelError, None),
        (Reply.hang(5), TransientChannelError, None),
        (Reply.reset(), TransientChannelError, None),
    ],
)
async def test_error_mapping(reply: Reply, error: type[Exception], retry_after: float | None) -> None:
    async with HttpSink(reply) as sink:
        channel = webhook(sink.url("/hook"), timeout=0.3)
        try:
            with pytest.raises(error) as caught:
                await channel.send(make_note())
        finally:
            await channel.close()
    if isinstance(caught.value, TransientChannelError):
        assert caught.value.retry_after == retry_after
    assert SECRET not in str(caught.value) and TOKEN not in str(caught.value)


async def test_secrets_echoed_by_the_receiver_are_redacted() -> None:
    async with HttpSink(Reply(400, f"bad token {TOKEN} / secret {SECRET}")) as sink:
        channel = webhook(sink.url("/hook"), secret_headers={"Authorization": "env:HOOK_TOKEN"})
        try:
            with pytest.raises(PermanentChannelError) as caught:
                await channel.send(make_note())
        finally:
            await channel.close()
    assert TOKEN not in str(caught.value) and SECRET not in str(caught.value)
    assert "[redacted]" in str(caught.value)


async def test_an_unresolvable_secret_is_permanent_and_names_only_the_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HOOK_SECRET")
    channel = webhook("http://127.0.0.1:9/hook")
    with pytest.raises(PermanentChannelError, match="HOOK_SECRET"):
        await channel.send(make_note())


@pytest.mark.parametrize(
    ("settings", "loc"),
    [
        ({"url": "http://x/", "secret": "env:S", "colour": "red"}, ("colour",)),
        ({"url": "ftp://x/", "secret": "env:S"}, ("url",)),
        ({"url": "http://x/"}, ("secret",)),
        ({"url": "http://x/", "secret": "inline-secret"}, ("secret",)),
        ({"url": "http://x/", "secret": "env:S", "method": "GET"}, ("method",)),
        ({"url": "http://x/", "secret": "env:S", "headers": {"X-Ackbot-Signature": "forged"}}, ("headers",)),
        ({"url": "http://x/", "secret": "env:S", "headers": {"X-A": "a\r\nInjected: 1"}}, ("headers",)),
        (
            {"url": "http://x/", "secret": "env:S", "secret_headers": {"Authorization": "Bearer inline"}},
            ("secret_headers",),
        ),
        ({"url": "http://x/", "secret": "env:S", "timeout": 0}, ("timeout",)),
    ],
)
def test_settings_are_checked(settings: dict[str, object], loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as caught:
        WebhookSettings.model_validate(settings)
    assert [e["loc"] for e in caught.value.errors()] == [loc]


def test_allow_private_defaults_to_false() -> None:
    assert WebhookSettings.model_validate({"url": "http://x/", "secret": "env:S"}).allow_private is False
