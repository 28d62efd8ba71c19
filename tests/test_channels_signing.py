"""The X-Ackbot-Signature scheme: what the webhook channel sends and every receiver (and the callback) checks."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from core.channels import signing
from core.channels.signing import SignatureError

SECRET = "whsec-0123456789"
BODY = b'{"type":"notify","title":"caf\xc3\xa9"}'
T = 1_717_171_717


def test_header_format_is_t_and_v1_hmac_of_timestamp_dot_body() -> None:
    header = signing.sign(SECRET, BODY, timestamp=T)
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={T},v1={expected}"


def test_verify_accepts_its_own_signature_and_returns_the_timestamp() -> None:
    header = signing.sign(SECRET, BODY, timestamp=T)
    assert signing.verify(SECRET, BODY, header, now=T + 10) == T
    assert signing.is_valid(SECRET, BODY, header, now=T - 10)


@pytest.mark.parametrize(
    ("secret", "body", "now", "reason"),
    [
        ("another-secret-000", BODY, T, "does not match"),
        (SECRET, BODY + b" ", T, "does not match"),
        (SECRET, BODY, T + 301, "tolerance"),
        (SECRET, BODY, T - 301, "tolerance"),
    ],
)
def test_verify_refuses_wrong_secret_tampered_body_and_stale_or_future_timestamps(
    secret: str, body: bytes, now: float, reason: str
) -> None:
    header = signing.sign(SECRET, BODY, timestamp=T)
    with pytest.raises(SignatureError, match=reason):
        signing.verify(secret, body, header, now=now)
    assert not signing.is_valid(secret, body, header, now=now)


def test_tolerance_is_configurable() -> None:
    header = signing.sign(SECRET, BODY, timestamp=T)
    assert signing.verify(SECRET, BODY, header, now=T + 3000, tolerance=3600) == T


@pytest.mark.parametrize(
    "header",
    [None, "", "garbage", "v1=abc", f"t={T}", "t=notanumber,v1=abc", f"t={T},v0=abc", f"t={T},v1=é"],
)
def test_malformed_headers_are_refused_not_crashed_on(header: str | None) -> None:
    with pytest.raises(SignatureError):
        signing.verify(SECRET, BODY, header, now=T)


def test_rotation_several_secrets_sign_and_any_verifies() -> None:
    header = signing.sign(["new-secret-0000", SECRET], BODY, timestamp=T)
    assert header.count("v1=") == 2
    assert signing.verify(SECRET, BODY, header, now=T) == T
    assert signing.verify("new-secret-0000", BODY, header, now=T) == T
    # A receiver that knows the old and the new secret accepts a sender that has only one of them.
    single = signing.sign(SECRET, BODY, timestamp=T)
    assert signing.verify(["new-secret-0000", SECRET], BODY, single, now=T) == T
    with pytest.raises(SignatureError):
        signing.verify(["x" * 16, "y" * 16], BODY, single, now=T)


def test_bytes_secrets_work_like_strings() -> None:
    assert signing.sign(SECRET.encode(), BODY, timestamp=T) == signing.sign(SECRET, BODY, timestamp=T)


def test_sign_needs_a_secret() -> None:
    with pytest.raises(ValueError):
        signing.sign([], BODY)
