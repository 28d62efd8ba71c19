"""Secret references (env:NAME, file:PATH): resolved when used, never logged."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

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


# ---------------------------------------------------------------- what the API may name

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_allowed_entry(entry: str) -> str:
    """An entry of secrets.allow: env:NAME, env:PREFIX* (a prefix of at least one character) or file:/absolute."""
    scheme, sep, rest = entry.partition(":")
    if scheme == "env" and sep:
        name = rest.removesuffix("*")
        if not _ENV_NAME_RE.match(name) or "*" in name:
            raise ValueError(
                f"{entry!r}: env: takes a variable name, or a name prefix ending in * (env:ACKBOT_SECRET_*); "
                "a bare * would hand every environment variable, ackbot's own keys included, to the API"
            )
        return entry
    if scheme == "file" and sep:
        if not Path(rest).expanduser().is_absolute() or "*" in rest:
            raise ValueError(f"{entry!r}: file: takes an absolute path (list directories under secrets.directories)")
        return entry
    raise ValueError(f"{entry!r}: expected env:NAME, env:PREFIX* or file:/absolute/path")


def check_directory(directory: str) -> str:
    """An entry of secrets.directories: an absolute path, not the root."""
    path = Path(directory).expanduser()
    if not path.is_absolute() or path == Path(path.anchor):
        raise ValueError(f"{directory!r}: a secrets directory is an absolute path other than /")
    return directory


def _real(path: str) -> Path:
    # Symlinks and .. resolved: file:/run/secrets/../../etc/passwd is /etc/passwd, wherever it seems to be.
    return Path(path).expanduser().resolve()


@dataclass(frozen=True)
class SecretPolicy:
    """The secret references that objects made through the API may name: the operator's `secrets:` allowlist.

    The config file may name any reference; an API key, even an admin's, only these, or it could read the server's
    environment (other tenants' keys) and files through a channel's settings."""

    allow: tuple[str, ...] = ()
    directories: tuple[str, ...] = ()

    def refusal(self, reference: str) -> str | None:
        """Why reference may not be used by an API object, or None when it may."""
        scheme, _, rest = reference.partition(":")
        if scheme == "env":
            for entry in self.allow:
                if entry == reference or (entry.endswith("*") and reference.startswith(entry[:-1])):
                    return None
        elif scheme == "file":
            target = _real(rest)
            if any(entry.startswith("file:") and _real(entry[5:]) == target for entry in self.allow):
                return None
            if any(target.is_relative_to(_real(directory)) for directory in self.directories):
                return None
        return (
            f"{reference} is not among the secret references the operator allows for objects made through the API "
            "(secrets.allow and secrets.directories in the config file)"
        )

    def check(self, reference: str) -> None:
        """Raise SecretError unless the reference is allowed."""
        reason = self.refusal(reference)
        if reason is not None:
            raise SecretError(reason)


def references_in(value: Any, path: tuple[int | str, ...] = ()) -> list[tuple[tuple[int | str, ...], str]]:
    """Every string in a JSON-like value that reads as a secret reference, with where it is."""
    if isinstance(value, str):
        return [(path, value)] if value.startswith(("env:", "file:")) else []
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in references_in(item, (*path, str(key)))]
    if isinstance(value, list | tuple):
        return [found for index, item in enumerate(value) for found in references_in(item, (*path, index))]
    return []
