"""Process logging: readable lines by default, one JSON object per line with ACKBOT_LOG_JSON=1.

Every line logged while a request is handled carries that request's id (the X-Request-Id it answered with).
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime

from core.url_redaction import redact_urls

REQUEST_ID: ContextVar[str] = ContextVar("ackbot_request_id", default="-")


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
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(level: str = "INFO", as_json: bool = False) -> None:
    """Send ackbot's logs to stderr in the chosen format."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
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
