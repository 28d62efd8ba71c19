"""Signatures on ackbot's outbound webhooks (and approval callbacks), and their verification.

The scheme, as a receiver sees it::

    X-Ackbot-Signature: t=1717171717,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd

``t`` is the signing time in Unix seconds; ``v1`` is the lower-case hex HMAC-SHA256, keyed with the channel's
secret, of the bytes ``"<t>." + <raw request body>``. To verify: recompute the HMAC over the raw body as
received (before any JSON parsing), compare in constant time, and refuse a ``t`` further than a few minutes
from now (a captured request cannot be replayed later). Several ``v1=`` entries may appear while a secret is
being rotated; one matching is enough. Idempotency is separate: ``X-Ackbot-Delivery-Id`` stays the same
across retries of one delivery, so a receiver that saw it already can drop the repeat.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable

SIGNATURE_HEADER = "X-Ackbot-Signature"
DELIVERY_ID_HEADER = "X-Ackbot-Delivery-Id"
ORIGIN_HEADER = "X-Ackbot-Origin"
SCHEME = "v1"
# Five minutes either way: room for clock skew and queueing, too little for a replay to be useful.
DEFAULT_TOLERANCE = 300.0


class SignatureError(Exception):
    """A signature header that is missing, malformed, too old, or does not match the body."""


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def compute(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of "<timestamp>.<body>" under secret."""
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(_as_bytes(secret), message, hashlib.sha256).hexdigest()


def sign(secret: str | bytes | Iterable[str | bytes], body: bytes, *, timestamp: int | None = None) -> str:
    """The X-Ackbot-Signature header value for body: "t=<unix seconds>,v1=<hex>" (one v1 per secret given)."""
    secrets = [secret] if isinstance(secret, str | bytes) else list(secret)
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    t = int(time.time()) if timestamp is None else int(timestamp)
    return ",".join([f"t={t}", *(f"{SCHEME}={compute(s, t, body)}" for s in secrets)])


def parse(header: str) -> tuple[int, list[str]]:
    """Split a signature header into its timestamp and its v1 signatures (unknown schemes are ignored)."""
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError("the signature timestamp is not a number") from None
        elif key == SCHEME:
            signatures.append(value.strip().lower())
    if timestamp is None:
        raise SignatureError("the signature header has no t= timestamp")
    if not signatures:
        raise SignatureError(f"the signature header has no {SCHEME}= signature")
    return timestamp, signatures


def verify(
    secret: str | bytes | Iterable[str | bytes],
    body: bytes,
    header: str | None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> int:
    """Check a signature header against the raw body; return its timestamp or raise SignatureError.

    ``secret`` may be several secrets (during a rotation): any one producing a listed signature passes.
    ``tolerance`` bounds how far, in seconds, the timestamp may be from ``now`` in either direction.
    """
    if not header:
        raise SignatureError(f"no {SIGNATURE_HEADER} header")
    timestamp, signatures = parse(header)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError("the signature timestamp is outside the tolerance window")
    secrets = [secret] if isinstance(secret, str | bytes) else list(secret)
    matched = False
    for candidate in secrets:
        expected = compute(candidate, timestamp, body)
        for signature in signatures:
            # Every comparison runs (no early exit): timing says nothing about which secret or entry matched.
            matched |= hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace"))
    if not matched:
        raise SignatureError("the signature does not match the body")
    return timestamp


def is_valid(
    secret: str | bytes | Iterable[str | bytes],
    body: bytes,
    header: str | None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """verify() as a yes or no."""
    try:
        verify(secret, body, header, tolerance=tolerance, now=now)
    except SignatureError:
        return False
    return True
