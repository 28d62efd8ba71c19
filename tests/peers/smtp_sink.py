"""A real SMTP server (aiosmtpd) on loopback that records every envelope and refuses what it is told to.

    with SmtpSink(refuse={"nobody@example.com": "550 5.1.1 no such user"}) as smtp:
        ... send to 127.0.0.1:smtp.port ...
        [envelope] = smtp.messages          # mail_from, rcpt_tos, raw content, parsed message

``data_reply`` answers DATA with a chosen status (e.g. "451 4.3.0 try later"); ``auth`` offers AUTH
PLAIN/LOGIN checked against that (user, password), without TLS, which only a test should allow.
"""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True)
class ReceivedMail:
    """One message as the server accepted it."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class _Handler:
    refuse: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    messages: list[ReceivedMail] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self.refuse.get(address.lower())
        if reply is not None:
            with self.lock:
                self.refused.append(address)
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply is not None:
            return self.data_reply
        content = envelope.original_content or b""
        with self.lock:
            self.messages.append(ReceivedMail(str(envelope.mail_from), list(envelope.rcpt_tos), content))
        return "250 2.0.0 Message accepted for delivery"


def free_port() -> int:
    """A TCP port nothing listens on right now (aiosmtpd's Controller needs one up front)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SmtpSink:
    """aiosmtpd's Controller (a server thread) with a recording handler."""

    def __init__(
        self,
        *,
        refuse: dict[str, str] | None = None,
        data_reply: str | None = None,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.handler = _Handler(refuse={k.lower(): v for k, v in (refuse or {}).items()}, data_reply=data_reply)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.auth = auth
        self.auth_attempts: list[tuple[str, bool]] = []
        kwargs: dict[str, Any] = {}
        if auth is not None:
            # AUTH offered without TLS (a test only); not required, so aiosmtpd does not warn about it on every session.
            kwargs.update(auth_require_tls=False, authenticator=self._authenticate)
        self.controller = Controller(self.handler, hostname=self.host, port=self.port, ready_timeout=10, **kwargs)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert self.auth is not None
        ok = (
            isinstance(auth_data, LoginPassword)
            and (
                auth_data.login.decode(),
                auth_data.password.decode(),
            )
            == self.auth
        )
        login = auth_data.login.decode() if isinstance(auth_data, LoginPassword) else "?"
        self.auth_attempts.append((login, ok))
        return AuthResult(success=ok, handled=False)

    @property
    def messages(self) -> list[ReceivedMail]:
        with self.handler.lock:
            return list(self.handler.messages)

    @property
    def refused(self) -> list[str]:
        with self.handler.lock:
            return list(self.handler.refused)

    def start(self) -> SmtpSink:
        """Start the server thread."""
        self.controller.start()
        return self

    def stop(self) -> None:
        """Stop the server thread."""
        self.controller.stop()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMail]:
        """Wait until at least count messages were accepted."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.messages)} of {count} messages arrived")
            time.sleep(0.01)
        return self.messages

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
