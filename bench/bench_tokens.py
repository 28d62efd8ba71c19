"""Benchmark ack tokens: issue+verify per second for the HMAC and DSSE codecs, beside a bare HMAC baseline.

Run from the repository root:  .venv/bin/python bench/bench_tokens.py [--seconds 2] [--repeats 3]

The baseline is one `hmac.new(key, payload, sha256).digest()` over the same compact claims JSON, measured in the
same run, so the printed ratios say how much the codec (JSON, base64, pydantic validation, itsdangerous key
derivation, Ed25519) costs over the raw MAC on this machine, independent of how fast the machine is.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import hmac
import platform
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.tokens import TokenCodec, build_codec, generate_ed25519_pem, generate_hmac_secret

NOW = 1_750_000_000


def claims() -> dict[str, Any]:
    """Realistic claim values: a tenant slug, UUIDs, a channel name and an email subject."""
    return {
        "tenant": "acme-payments-prod-eu-west-1",
        "approval_id": str(uuid.uuid4()),
        "delivery_id": str(uuid.uuid4()),
        "channel": "slack-platform-oncall",
        "choice": "acknowledge",
        "subject": "jane.doe@example.com",
    }


def rate(op: Callable[[], object], seconds: float, repeats: int) -> float:
    """Best-of-N operations per second; each run lasts about `seconds`."""
    best = 0.0
    for _ in range(repeats):
        gc.collect()
        count, batch = 0, 64
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            for _ in range(batch):
                op()
            count += batch
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, count / (now - start))
    return best


def codec_ops(codec: TokenCodec) -> tuple[Callable[[], object], Callable[[], object], Callable[[], object]]:
    """issue, verify and issue+verify closures over one codec with the same claims."""
    fields = claims()
    token = codec.issue(**fields, now=NOW)

    def issue() -> object:
        return codec.issue(**fields, now=NOW)

    def verify() -> object:
        return codec.verify(token, expected_tenant=fields["tenant"], expected_choice="acknowledge", now=NOW)

    def both() -> object:
        return codec.verify(codec.issue(**fields, now=NOW), now=NOW)

    return issue, verify, both


def main(argv: list[str] | None = None) -> None:
    """Print issue, verify and issue+verify rates per mode and their ratio to the bare-HMAC baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=1.0, help="duration of one measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per figure; the best is kept")
    args = parser.parse_args(argv)

    codecs = {
        "hmac": build_codec("hmac", [("bench", generate_hmac_secret(), False)]),
        "dsse": build_codec("dsse", [("bench", generate_ed25519_pem(), False)]),
    }
    # Baseline payload: the very bytes the DSSE codec signs (compact JSON claims).
    sample = codecs["dsse"].verify(codecs["dsse"].issue(**claims(), now=NOW), now=NOW)
    payload = sample.model_dump_json(by_alias=True, exclude_none=True).encode()
    key = generate_hmac_secret().encode()

    def baseline_op() -> object:
        return hmac.new(key, payload, hashlib.sha256).digest()

    baseline = rate(baseline_op, args.seconds, args.repeats)
    print(f"python {platform.python_version()} on {platform.machine()}; payload {len(payload)} bytes")
    print(f"baseline  bare hmac-sha256 digest: {baseline:>12,.0f} ops/s")
    print(f"{'mode':<6}{'token chars':>12}{'issue/s':>12}{'verify/s':>12}{'issue+verify/s':>16}{'baseline ratio':>16}")
    for mode, codec in codecs.items():
        issue, verify, both = codec_ops(codec)
        token_chars = len(codec.issue(**claims(), now=NOW))
        issue_rate = rate(issue, args.seconds, args.repeats)
        verify_rate = rate(verify, args.seconds, args.repeats)
        both_rate = rate(both, args.seconds, args.repeats)
        ratio = f"1/{baseline / both_rate:,.0f}"
        print(f"{mode:<6}{token_chars:>12}{issue_rate:>12,.0f}{verify_rate:>12,.0f}{both_rate:>16,.0f}{ratio:>16}")


if __name__ == "__main__":
    main()
