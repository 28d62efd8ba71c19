"""The one reader of JSON that arrives from outside: bounded nesting, finite numbers, no recursion in Python.

Every route, the Slack and Teams ingress and free-form ``payload`` fields go through here, so a body nested
10,000 levels deep or a number such as ``1e999999`` is refused as bad input (a 400 naming the field) instead of
raising RecursionError or storing ``inf``. The parser is pydantic-core's (Rust, its own recursion guard well below
any stack limit); the checks then walk what it built, which costs a few microseconds for an event.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic_core import from_json

# The deepest nesting accepted anywhere in a JSON document, the document itself counted as level 1 (README.md,
# "What every body is held to").
MAX_DEPTH = 64

# Byte-order marks and the zero bytes of UTF-16/32 text: such bodies are decoded before parsing (RFC 8259 § 8.1
# wants UTF-8, but json.loads has always read them and senders exist).
_NOT_UTF8_PREFIXES = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


NOT_FINITE = "a number that is not finite (NaN, an infinity, or too large for a double)"


class JsonRefused(ValueError):
    """A JSON document that cannot be accepted: the message, and the field it concerns ("(body)" for the whole)."""

    def __init__(self, message: str, field: str = "(body)") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class _Bad(Exception):
    """Raised at the offending value and given its path on the way out (no path is built unless one is bad)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str | int] = []


def field_name(path: list[str | int]) -> str:
    """A path in a document as the API names fields elsewhere: ``payload.a[2].b``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    # A path 5,000 levels deep is not worth repeating in full.
    return (text if len(text) <= 120 else text[:117] + "...") or "(body)"


def _walk(value: dict[str, Any] | list[Any], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _Bad(f"nested deeper than {MAX_DEPTH} levels")
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        kind = type(item)
        if kind is dict or kind is list:
            try:
                _walk(item, depth + 1)
            except _Bad as inner:
                inner.path.append(key)
                raise
        elif kind is float and not math.isfinite(item):
            refused = _Bad(NOT_FINITE)
            refused.path.append(key)
            raise refused


def check_value(value: Any, *, depth: int = 1, prefix: tuple[str | int, ...] = ()) -> None:
    """Refuse a parsed value nested deeper than MAX_DEPTH (counting from depth) or holding NaN or an infinity."""
    kind = type(value)
    if kind is float and not math.isfinite(value):
        raise JsonRefused(NOT_FINITE, field_name(list(prefix)))
    if kind is not dict and kind is not list:
        return
    try:
        _walk(value, depth)
    except _Bad as bad:
        raise JsonRefused(bad.message, field_name([*prefix, *reversed(bad.path)])) from None


def surely_shallow(raw: bytes) -> bool:
    """True when raw cannot nest deeper than MAX_DEPTH: it opens no more arrays and objects than that in all.

    Two scans in C, a microsecond for an event: lets a caller parse with a reader that does not check depth.
    """
    return raw.count(b"{") + raw.count(b"[") <= MAX_DEPTH


def _names_non_finite(raw: bytes | str) -> bool:
    if isinstance(raw, str):
        return "NaN" in raw or "Infinity" in raw
    return b"NaN" in raw or b"Infinity" in raw


def loads(raw: bytes | str) -> Any:
    """Parse a JSON document from outside; JsonRefused when it is not JSON, too deep or not finite."""
    if isinstance(raw, bytes) and (raw.startswith(_NOT_UTF8_PREFIXES) or b"\x00" in raw[:4]):
        try:
            raw = raw.decode(json.detect_encoding(raw)).lstrip("\ufeff")
        except (UnicodeDecodeError, LookupError) as exc:
            raise JsonRefused(f"not valid JSON: {exc}") from None
    try:
        # NaN and Infinity are not JSON: refused by the parser itself. 1e999999 is JSON, parsed as inf: checked below.
        value = from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        message = str(exc)
        if _names_non_finite(raw):
            # Read again taking NaN and Infinity, so that the refusal below names the field that holds one.
            try:
                value = from_json(raw, allow_inf_nan=True)
            except ValueError:
                pass
            else:
                check_value(value)
        if message.startswith("recursion limit exceeded"):
            raise JsonRefused(f"nested deeper than {MAX_DEPTH} levels") from None
        raise JsonRefused(f"not valid JSON: {message}") from None
    check_value(value)
    return value
