"""What a request to POST /slack/events must be before Bolt sees it: signed by Slack, then well formed.

Bolt parses a body (``json.loads`` of the body or of its ``payload=`` field) before it checks the signature, and
raises on a non-numeric timestamp, non-UTF-8 bytes, a payload that is not a JSON object or one nested thousands
of levels deep: each was a 500 with a traceback. Here the signature is checked on the raw bytes first (401 for
anything unsigned, without parsing a byte of it), then the body is decoded and parsed the way Bolt will parse it,
through the one JSON reader (core/json_input.py), so every malformed signed request is a 400 naming the problem.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import parse_qsl

from aiohttp import web

from bot.handlers.http import ApiError, BodyTooLarge, json_refusal, read_limited
from core import json_input
from core.json_input import JsonRefused

# Slack refuses to sign more than five minutes either side of now; so do we (as Bolt does).
MAX_CLOCK_SKEW = 5 * 60
SIGNATURE_VERSION = "v0"


def _unauthorized(reason: str) -> ApiError:
    return ApiError(401, f"not a request signed by Slack: {reason}")


def verify_signature(raw: bytes, *, timestamp: str, signature: str, secret: str) -> None:
    """Slack's v0 request signature over the raw body; 401 (ApiError) when it is missing, stale or wrong."""
    if not timestamp or not signature:
        raise _unauthorized("X-Slack-Request-Timestamp or X-Slack-Signature missing")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise _unauthorized("X-Slack-Request-Timestamp is not a number of seconds")
    if abs(time.time() - int(timestamp)) > MAX_CLOCK_SKEW:
        raise _unauthorized("X-Slack-Request-Timestamp is more than five minutes from now")
    base = f"{SIGNATURE_VERSION}:{timestamp}:".encode() + raw
    expected = f"{SIGNATURE_VERSION}=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        raise _unauthorized("the signature does not match")


def check_form(text: str, content_type: str) -> None:
    """The body parsed as Bolt will parse it (its parse_body); 400 for anything Bolt would raise on."""
    if content_type == "application/json" or text.startswith("{"):
        _object(text, "request body")
        return
    if "payload" in text:
        payload = dict(parse_qsl(text, keep_blank_values=True)).get("payload")
        if payload is not None:
            _object(payload, "payload")


def _object(text: str, what: str) -> None:
    try:
        document = json_input.loads(text)
    except JsonRefused as exc:
        raise json_refusal(exc, what=what) from None
    if not isinstance(document, dict):
        raise ApiError(400, f"{what} is not a JSON object", errors=[{"field": what, "message": "a JSON object"}])


async def checked_body(request: web.Request, *, secret: str | None, limit: int) -> str:
    """The body of a Slack request, signed (when a signing secret is set) and well formed, as text for Bolt."""
    try:
        raw = await read_limited(request, limit)
    except BodyTooLarge as exc:
        raise ApiError(413, str(exc)) from None
    if secret is not None:
        verify_signature(
            raw,
            timestamp=request.headers.get("X-Slack-Request-Timestamp", ""),
            signature=request.headers.get("X-Slack-Signature", ""),
            secret=secret,
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"request body is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    check_form(text, request.content_type)
    return text
