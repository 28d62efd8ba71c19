"""Process logging: readable lines by default, one JSON object per line with ACKBOT_LOG_JSON=1.

Every line logged while a request is handled carries that request's id (the X-Request-Id it answered with).
No line carries an ack token: a token is a credential (whoever holds it may click), and it travels in paths
(/ack/{token}) and request bodies that a library or an error message may quote; every line is scrubbed of them.
"""

from __future__ import annotations

import json
import logging
import re
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from core.url_redaction import redact_urls

REQUEST_ID: ContextVar[str] = ContextVar("ackbot_request_id", default="-")

# The two shapes of an ack token (core/tokens.py): HMAC, itsdangerous' [.]payload.signature in base64url with a
# 43-character HMAC-SHA256 signature; DSSE, a base64url compact-JSON envelope, which always starts with eyJ ({").
# A match may start only where a run of such characters starts (or right after a %-escape, as in a form body),
# so a long run is scanned once, not once per character (a megabyte of "x" would otherwise take minutes).
_RUN_START = r"(?:(?<![A-Za-z0-9_.-])|(?<=%[0-9A-Fa-f]{2}))"
_TOKEN_RE = re.compile(
    rf"{_RUN_START}\.?[A-Za-z0-9_-]{{8,}}\.[A-Za-z0-9_-]{{43}}(?![A-Za-z0-9_-])"
    rf"|{_RUN_START}eyJ[A-Za-z0-9_-]{{40,}}"
)
REDACTED_TOKEN = "[token redacted]"


def redact_tokens(text: str) -> str:
    """The text with every ack token in it replaced."""
    return _TOKEN_RE.sub(REDACTED_TOKEN, text)


class TokenRedactionFilter(logging.Filter):
    """Rewrites each record's message (and traceback text) without ack tokens, whoever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_tokens(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_tokens(record.exc_text)
        return True


class RateLimitedLog:
    """At most one line per interval for a message that outsiders can cause at will (refused requests): each
    line says how many were not logged since the last one, so a flood costs one line per interval."""

    def __init__(self, logger: logging.Logger, *, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last = float("-inf")
        self._held = 0

    def warning(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._held += 1
            return
        held, self._held, self._last = self._held, 0, now
        if held:
            message += f" (and {held} more in the last {self.interval:g}s, not logged)"
        self.logger.warning(message, *args)


class RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the request being handled, or "-"."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class RedactingFormatter(logging.Formatter):
    """Lines with the credentials of every URL masked, tracebacks included (a database URL in an error...)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_urls(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact_urls(self._entry(record))

    def _entry(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            # The text the redaction filter left, when it ran; formatting the exception again would undo it.
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(level: str = "INFO", as_json: bool = False) -> None:
    """Send ackbot's logs to stderr in the chosen format."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.addFilter(TokenRedactionFilter())
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s [%(request_id)s]: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # Alembic announces its context on every readiness probe; our own start-up line says what matters.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # aiosqlite logs every call into its thread at DEBUG, from that thread: nothing an operator reads.
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)
