"""What every alert-source translator needs: kinds and labels made to fit our envelope."""

from __future__ import annotations

import re

_KIND_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/-]")


def kind_for(source: str, alertname: str) -> str:
    """An event kind such as "alertmanager.HighLatency", with characters our envelope refuses replaced."""
    return _KIND_UNSAFE.sub("_", f"{source}.{alertname}")[:200]


def clip_labels(labels: dict[str, str]) -> dict[str, str]:
    """At most 100 labels, names and values cut to the envelope's limits."""
    return {name[:128]: value[:1024] for name, value in list(labels.items())[:100]}


def identity_of(fingerprint: str, labels: dict[str, str]) -> str:
    """The source's fingerprint, or a stable one made of the label set."""
    return fingerprint or ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
