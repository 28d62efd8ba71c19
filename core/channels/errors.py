"""What a delivery attempt raises, and what of a URL its messages may show.

Below base.py and safety.py, which both raise these: the channel base checks every destination through safety.
"""

from __future__ import annotations

from urllib.parse import urlsplit


class ChannelError(Exception):
    """A delivery attempt failed; subclasses say whether trying again can help."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class TransientChannelError(ChannelError):
    """Worth another attempt later (time-outs, 5xx, 429); retry_after is the receiver's wish in seconds."""

    def __init__(self, message: str, *, status_code: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after


class PermanentChannelError(ChannelError):
    """Trying again cannot help (bad credentials, unknown destination, rejected payload)."""


def safe_url(url: str) -> str:
    """scheme://host[:port] of a URL: what error messages may show of a URL that can carry a secret in its path."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = parts.port
    except ValueError:
        return "(invalid URL)"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")
