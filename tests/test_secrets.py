"""Secret references: env and file, file permissions checked, values never echoed in errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.secrets import SecretError, resolve_secret

VALUE = "s3cr3t-value-0123456789"


def test_env_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACKBOT_TEST_SECRET", f"  {VALUE}\n")
    assert resolve_secret("env:ACKBOT_TEST_SECRET") == VALUE
    monkeypatch.delenv("ACKBOT_TEST_SECRET")
    with pytest.raises(SecretError, match="ACKBOT_TEST_SECRET is not set"):
        resolve_secret("env:ACKBOT_TEST_SECRET")


@pytest.mark.parametrize(
    ("mode", "allowed"), [(0o600, True), (0o400, True), (0o640, True), (0o644, False), (0o660, False), (0o606, False)]
)
def test_file_reference_permissions(tmp_path: Path, mode: int, allowed: bool) -> None:
    path = tmp_path / "key"
    path.write_text(VALUE + "\n")
    path.chmod(mode)
    if allowed:
        assert resolve_secret(f"file:{path}") == VALUE
    else:
        with pytest.raises(SecretError, match="open to others") as caught:
            resolve_secret(f"file:{path}")
        assert VALUE not in str(caught.value) and f"chmod 600 {path}" in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="cannot read secret file"):
        resolve_secret(f"file:{tmp_path}/nope")
