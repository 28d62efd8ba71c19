"""Secret references (env:NAME, file:PATH): resolved when used, never logged."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator


class SecretError(Exception):
    """A secret reference that cannot be resolved; the message never contains the secret."""


def _check_reference(value: str) -> str:
    scheme, sep, rest = value.partition(":")
    if not sep or scheme not in ("env", "file") or not rest:
        raise ValueError("a secret reference: env:NAME or file:PATH (secrets are never written inline)")
    return value


SecretRef = Annotated[str, AfterValidator(_check_reference)]


def resolve_secret(reference: str) -> str:
    """Read the secret a reference points to, stripped of surrounding white space."""
    scheme, _, rest = reference.partition(":")
    if scheme == "env":
        value = os.environ.get(rest)
        if value is None:
            raise SecretError(f"environment variable {rest} is not set")
        return value.strip()
    if scheme == "file":
        path = Path(rest).expanduser()
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"cannot read secret file {path}: {exc.strerror}") from None
    raise SecretError(f"unknown secret reference scheme {scheme!r}")


def redact(text: str, secrets: list[str]) -> str:
    """Replace every occurrence of the given secret values in text."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return text
