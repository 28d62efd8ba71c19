"""The email channel against a real aiosmtpd server on loopback."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.channels.base import ChannelContext
from core.channels.email import EmailChannel, EmailSettings
from core.channels.errors import PermanentChannelError, TransientChannelError
from core.channels.safety import UnsafeDestinationError
from core.models.approvals import ApprovalState
from tests.peers.notes import make_alert, make_approval_note, make_note
from tests.peers.smtp_sink import SmtpSink, free_port

PASSWORD = "smtp-pass-0123456789"


@pytest.fixture(autouse=True)
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)


def mailer(port: int, **settings: object) -> EmailChannel:
    data: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "from": "ackbot <ackbot@example.com>",
        "to": ["oncall@example.com", "lead@example.com"],
        "cc": ["audit@example.com"],
        "timeout": 5,
        "allow_private": True,  # the test server is on loopback
        **settings,
    }
    context = ChannelContext(origin="origin-1", public_url="http://127.0.0.1:8080")
    return EmailChannel("mail", EmailSettings.model_validate(data), context)


async def test_sends_multipart_text_and_html_with_message_id_from_the_idempotency_key() -> None:
    with SmtpSink() as smtp:
        result = await mailer(smtp.port).send(make_note())
        [mail] = smtp.messages
    assert mail.mail_from == "ackbot@example.com"
    assert mail.rcpt_tos == ["oncall@example.com", "lead@example.com", "audit@example.com"]
    message = mail.message
    assert message["Subject"] == "[CRITICAL] CVE-2024-0001 in <payments> & co"
    assert message["Message-ID"] == "<idem-dl_1@example.com>"
    assert message["To"] == "oncall@example.com, lead@example.com"
    assert message["Cc"] == "audit@example.com"
    assert message["X-Ackbot-Delivery-Id"] == "idem-dl_1"
    assert message["X-Ackbot-Origin"] == "origin-1"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    text_part = message.get_body(("plain",))
    html_part = message.get_body(("html",))
    assert text_part is not None and html_part is not None
    text = text_part.get_content()
    html = html_part.get_content()
    assert "CVE-2024-0001 in <payments> & co" in text
    assert "Acknowledge: https://ackbot.example.com/ack/tok-ack-123" in text
    assert "Deny: https://ackbot.example.com/ack/tok-deny-456" in text
    # Event content is escaped in HTML, never markup.
    assert "<payments>" not in html
    assert "CVE-2024-0001 in &lt;payments&gt; &amp; co" in html
    assert 'href="https://ackbot.example.com/ack/tok-ack-123"' in html
    assert 'href="https://example.org/advisory?a=1&amp;b=2"' in html
    assert result.message_ref == {"message_id": "<idem-dl_1@example.com>"}
    assert result.detail == {}


async def test_html_escapes_hostile_content() -> None:
    note = make_note(alert=make_alert(summary='<script>alert("x")</script>'))
    with SmtpSink() as smtp:
        await mailer(smtp.port).send(note)
        html_part = smtp.messages[0].message.get_body(("html",))
    assert html_part is not None
    html = html_part.get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html


async def test_a_refused_recipient_does_not_drop_the_others() -> None:
    with SmtpSink(refuse={"lead@example.com": "550 5.1.1 no such user"}) as smtp:
        result = await mailer(smtp.port).send(make_note())
        [mail] = smtp.messages
        assert smtp.refused == ["lead@example.com"]
    assert mail.rcpt_tos == ["oncall@example.com", "audit@example.com"]
    assert result.detail == {"refused": {"lead@example.com": "550 5.1.1 no such user"}}


async def test_every_recipient_refused_5xx_is_permanent() -> None:
    refuse = {a: "550 5.1.1 no such user" for a in ("oncall@example.com", "lead@example.com", "audit@example.com")}
    with SmtpSink(refuse=refuse) as smtp:
        with pytest.raises(PermanentChannelError, match="every recipient was refused") as caught:
            await mailer(smtp.port).send(make_note())
        assert smtp.messages == []
    assert caught.value.status_code == 550


async def test_every_recipient_refused_with_a_4xx_among_them_is_transient() -> None:
    refuse = {
        "oncall@example.com": "450 4.2.1 mailbox busy",
        "lead@example.com": "550 no",
        "audit@example.com": "550 no",
    }
    with SmtpSink(refuse=refuse) as smtp, pytest.raises(TransientChannelError):
        await mailer(smtp.port).send(make_note())


@pytest.mark.parametrize(
    ("reply", "error"),
    [("451 4.3.0 try again later", TransientChannelError), ("554 5.7.1 rejected as spam", PermanentChannelError)],
)
async def test_data_answers_4xx_transient_5xx_permanent(reply: str, error: type[Exception]) -> None:
    with SmtpSink(data_reply=reply) as smtp, pytest.raises(error) as caught:
        await mailer(smtp.port).send(make_note())
    assert str(caught.value).endswith(reply.split(" ", 1)[1])


async def test_a_refused_connection_is_transient() -> None:
    with pytest.raises(TransientChannelError, match=r"127\.0\.0\.1"):
        await mailer(free_port()).send(make_note())


async def test_starttls_required_but_not_offered_is_permanent() -> None:
    with SmtpSink() as smtp, pytest.raises(PermanentChannelError, match="STARTTLS"):
        await mailer(smtp.port, security="starttls").send(make_note())


async def test_login_with_the_password_reference() -> None:
    with SmtpSink(auth=("ackbot", PASSWORD)) as smtp:
        await mailer(smtp.port, username="ackbot", password="env:SMTP_PASSWORD").send(make_note())
        assert smtp.auth_attempts == [("ackbot", True)]
        assert len(smtp.messages) == 1


async def test_a_wrong_password_is_permanent_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "wrong-password-0123")
    with SmtpSink(auth=("ackbot", PASSWORD)) as smtp:
        with pytest.raises(PermanentChannelError) as caught:
            await mailer(smtp.port, username="ackbot", password="env:SMTP_PASSWORD").send(make_note())
        assert smtp.messages == []
    assert caught.value.status_code == 535
    assert "wrong-password-0123" not in str(caught.value)


async def test_update_is_a_threaded_reply() -> None:
    note = make_approval_note(ApprovalState.acknowledged)
    with SmtpSink() as smtp:
        result = await mailer(smtp.port).update({"message_id": "<idem-dl_0@example.com>"}, note)
        message = smtp.messages[0].message
    assert message["In-Reply-To"] == "<idem-dl_0@example.com>"
    assert message["References"] == "<idem-dl_0@example.com>"
    assert message["Subject"] == "Re: [APPROVAL] Deploy payments 1.2.3 to prod?"
    assert message["Message-ID"] == "<idem-dl_2@example.com>"
    text_part = message.get_body(("plain",))
    assert text_part is not None and "acknowledge by alice" in text_part.get_content()
    assert result.message_ref == {"message_id": "<idem-dl_2@example.com>"}


async def test_a_person_target_replaces_the_configured_recipients() -> None:
    with SmtpSink() as smtp:
        await mailer(smtp.port).send(make_note(target="alice@example.com"))
        assert smtp.messages[0].rcpt_tos == ["alice@example.com"]


async def test_odd_idempotency_keys_still_make_valid_message_ids() -> None:
    with SmtpSink() as smtp:
        await mailer(smtp.port).send(make_note(idempotency_key="a key <with> @ odd chars"))
        message_id = smtp.messages[0].message["Message-ID"]
    assert message_id.startswith("<") and message_id.endswith("@example.com>")
    assert " " not in message_id and message_id.count("@") == 1


@pytest.mark.parametrize(
    ("settings", "loc"),
    [
        ({"bogus": 1}, ("bogus",)),
        ({"to": ["not an address"]}, ("to",)),
        ({"from": "nobody"}, ("from",)),
        ({"security": "ssl"}, ("security",)),
        ({"username": "u"}, ()),
        ({"password": "inline"}, ("password",)),
    ],
)
def test_settings_are_checked(settings: dict[str, object], loc: tuple[str, ...]) -> None:
    data = {"host": "smtp.example.com", "from": "ackbot@example.com", "to": ["a@example.com"], **settings}
    with pytest.raises(ValidationError) as caught:
        EmailSettings.model_validate(data)
    assert caught.value.errors()[0]["loc"] == loc


def test_settings_read_and_write_from_as_from() -> None:
    settings = EmailSettings.model_validate({"host": "h", "from": "ackbot@example.com"})
    assert settings.model_dump(mode="json")["from"] == "ackbot@example.com"


async def test_an_smtp_server_on_loopback_is_refused_without_allow_private() -> None:
    with SmtpSink() as smtp:
        for host in ("127.0.0.1", "localhost", "::ffff:127.0.0.1"):
            with pytest.raises(UnsafeDestinationError, match=r"loopback.*allow_private"):
                await mailer(smtp.port, host=host, allow_private=False).send(make_note())
        assert smtp.messages == []
        await mailer(smtp.port, allow_private=True).send(make_note())
        assert len(smtp.messages) == 1


@pytest.mark.parametrize("host", ["10.0.0.1", "169.254.169.254", "2002:7f00:1::"])
async def test_private_and_link_local_smtp_servers_are_refused(host: str) -> None:
    with pytest.raises(UnsafeDestinationError, match="allow_private"):
        await mailer(25, host=host, allow_private=False).send(make_note())


async def test_ackbots_own_address_is_refused_even_with_allow_private() -> None:
    # An "SMTP server" at ackbot's own listening address and port: the same loop a webhook to itself would make.
    with pytest.raises(UnsafeDestinationError, match="own public URL"):
        await mailer(8080, host="localhost", allow_private=True).send(make_note())
