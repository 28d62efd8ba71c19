"""Secret references (env:NAME, file:PATH): resolved when used, never logged."""

from __future__ import annotations

import os
import stat
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


# Others may neither read nor write a secret file, and the group may not write it (a group-readable file
# is common for service accounts and Kubernetes secret volumes with fsGroup).
FORBIDDEN_MODE_BITS = stat.S_IRWXO | stat.S_IWGRP


def _check_permissions(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & FORBIDDEN_MODE_BITS:
        raise SecretError(
            f"secret file {path} is open to others (mode {stat.S_IMODE(mode):04o}); "
            f"make it private, e.g. chmod 600 {path}"
        )


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
            _check_permissions(path)
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
