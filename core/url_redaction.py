"""Credentials inside URLs never reach a log line or an answer: ``postgresql://app:s3cret@db/x`` is written
``postgresql://app:***@db/x``, and ``?token=…``-style query parameters lose their values the same way."""

from __future__ import annotations

import re

MASK = "***"

# scheme://userinfo@ : the userinfo (user, or user:password, or a bare token) is everything before the last "@"
# of the authority, which ends at the first "/", "?", "#" or white space.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#@\s\"'<>]+)@")
_QUERY_SECRET = re.compile(
    r"(?P<name>[?&](?:password|passwd|pwd|pass|token|access_token|api[_-]?key|key|secret|client_secret|sig|"
    r"signature|auth)=)(?P<value>[^&#\s\"'<>]+)",
    re.IGNORECASE,
)


def _mask_userinfo(match: re.Match[str]) -> str:
    user, colon, _password = match["userinfo"].partition(":")
    return f"{match['scheme']}{user}:{MASK}@" if colon else f"{match['scheme']}{MASK}@"


def redact_urls(text: str) -> str:
    """text with the credentials of every URL in it masked; text itself when it holds none (the common case)."""
    if "://" in text:
        text = _USERINFO.sub(_mask_userinfo, text)
    if "=" in text and ("?" in text or "&" in text):
        text = _QUERY_SECRET.sub(lambda m: m["name"] + MASK, text)
    return text
