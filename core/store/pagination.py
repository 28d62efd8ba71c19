"""Keyset pagination over time-ordered ids: stable under inserts, cheap at any depth."""

from __future__ import annotations

import base64
import binascii

from pydantic import BaseModel, Field


class Page(BaseModel):
    """How much to return and where to continue from."""

    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = None


def encode_cursor(last_id: str) -> str:
    """An opaque cursor for the row after last_id."""
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The id a cursor points after; ValueError for a cursor we did not make."""
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("invalid cursor") from None
    if not value or len(value) > 64 or not value.replace("_", "").isalnum():
        raise ValueError("invalid cursor")
    return value
