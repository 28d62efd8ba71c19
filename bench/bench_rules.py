"""Benchmark the rules engine: indexed RuleSet.match against a linear scan of the same compiled checks.

Run from the repository root:  .venv/bin/python bench/bench_rules.py [--rules 10000] [--events 5000] [--seed 7]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.models.common import Severity
from core.models.events import Event, Scope
from core.models.rules import Condition, Match, Rule
from core.rules import RuleSet

DOMAINS = {
    "ci": ["pipeline", "job", "build", "test", "release"],
    "deploy": ["rollout", "canary", "rollback", "gate", "freeze"],
    "k8s": ["pod", "node", "pvc", "job", "hpa"],
    "security": ["scan", "cve", "secret", "policy", "signature"],
    "db": ["replica", "backup", "migration", "disk", "connection"],
    "billing": ["invoice", "budget", "quota", "payment", "refund"],
    "cert": ["tls", "ca", "renewal", "ocsp", "mtls"],
    "queue": ["lag", "dlq", "consumer", "broker", "partition"],
}
VERBS = ["failed", "succeeded", "started", "degraded", "requested", "expired"]
KINDS = [f"{domain}.{subject}.{verb}" for domain, subjects in DOMAINS.items() for subject in subjects for verb in VERBS]
TENANTS = [f"tenant-{i:03d}" for i in range(200)]
NAMESPACES = ["prod-eu", "prod-us", "prod-ap", "staging", "dev-alice", "dev-bob", "qa", "sandbox"]
REPOS = [f"acme/{name}" for name in ("payments-api", "payments-ui", "checkout", "search", "infra", "auth", "ledger")]
TEAMS = ["payments", "payments-eu", "search", "platform", "sre", "security", "data"]
SEVERITIES = list(Severity)


def random_kinds(rng: random.Random) -> list[str]:
    """Exact kinds mostly, then globs of several shapes, sometimes none at all."""
    roll = rng.random()
    if roll < 0.55:
        return rng.sample(KINDS, rng.randint(1, 3))
    if roll < 0.85:
        domain = rng.choice(list(DOMAINS))
        subject = rng.choice(DOMAINS[domain])
        return [
            rng.choice(
                [
                    f"{domain}.*",
                    f"{domain}.{subject}.*",
                    f"*.{rng.choice(VERBS)}",
                    f"{domain}.*.{rng.choice(VERBS)}",
                    f"{domain}.{subject[:2]}*",
                    f"{domain}.{subject}.[fs]*",
                ]
            )
        ]
    return []


def random_conditions(rng: random.Random) -> list[Condition]:
    """A mix of every operator over payload, scope, title and severity."""
    pool = [
        Condition(field="payload.verdict", op="ne", value="pass"),
        Condition(field="payload.verdict", op="eq", value="fail"),
        Condition(field="payload.retries", op="gte", value=rng.randint(1, 5)),
        Condition(field="payload.duration_ms", op="lt", value=rng.choice([500, 1000, "2000"])),
        Condition(field="payload.cluster", op="regex", value=r"^eu-"),
        Condition(field="payload.tags", op="contains", value=rng.choice(["pci", "gdpr", "customer"])),
        Condition(field="payload.region", op="in", value=rng.sample(["eu-west-1", "us-east-1", "ap-south-1"], 2)),
        Condition(field="payload.ticket", op="exists", value=rng.choice([True, False])),
        Condition(field="scope.labels.env", op="eq", value=rng.choice(["prod", "staging"])),
        Condition(field="title", op="contains", value=rng.choice(["prod", "urgent", "nightly"])),
        Condition(field="severity", op="gte", value=rng.choice(["medium", "high"])),
    ]
    return rng.sample(pool, rng.choice([0, 0, 1, 1, 2, 3]))


def random_rule(rng: random.Random, number: int) -> Rule:
    """One plausible routing rule."""
    labels: dict[str, str] = {}
    if rng.random() < 0.4:
        labels["team"] = rng.choice([*TEAMS, "payments*", "*-eu"])
    if rng.random() < 0.2:
        labels["env"] = rng.choice(["prod", "staging", "*"])
    match = Match(
        kinds=random_kinds(rng),
        namespaces=rng.choice([[], [], [], ["prod-*"], ["staging", "qa"], ["dev-*", "sandbox"]]),
        repos=rng.choice([[], [], [], [], ["acme/*"], ["acme/payments-*"], ["acme/infra"]]),
        labels=labels,
        min_severity=rng.choice(SEVERITIES),
        where=random_conditions(rng),
    )
    tenant = "*" if rng.random() < 0.05 else rng.choice(TENANTS)
    return Rule(name=f"rule-{number:05d}", tenant=tenant, enabled=rng.random() > 0.05, match=match)


# Real traffic is skewed: a few tenants and kinds send most events (Zipf-like weights).
TENANT_WEIGHTS = [1 / (rank + 1) for rank in range(len(TENANTS))]
KIND_WEIGHTS = [1 / (rank + 1) for rank in range(len(KINDS))]


def random_event(rng: random.Random, number: int) -> Event:
    """One plausible incoming event, sometimes of a kind no rule names."""
    now = datetime(2025, 1, 1, tzinfo=UTC)
    kind = rng.choices(KINDS, KIND_WEIGHTS)[0]
    if rng.random() < 0.05:
        kind = f"custom.thing{rng.randint(0, 999)}.happened"
    payload: dict[str, Any] = {
        "verdict": rng.choice(["pass", "fail", "warn"]),
        "retries": rng.choice([0, 1, 2, 3, 5, "4"]),
        "duration_ms": rng.randint(10, 5000),
        "cluster": rng.choice(["eu-west", "us-east", "ap-south"]),
        "tags": rng.sample(["pci", "gdpr", "customer", "internal"], rng.randint(0, 3)),
        "region": rng.choice(["eu-west-1", "us-east-1", "ap-south-1"]),
    }
    if rng.random() < 0.3:
        payload["ticket"] = f"OPS-{rng.randint(1, 9999)}"
    labels = {"team": rng.choice(TEAMS), "env": rng.choice(["prod", "staging"])}
    return Event(
        id=f"evt-{number}",
        kind=kind,
        tenant=rng.choices(TENANTS, TENANT_WEIGHTS)[0],
        ts=now,
        received_at=now,
        severity=rng.choice(SEVERITIES),
        title=rng.choice(["prod deploy failed", "nightly build", "urgent: disk full", "cert expiring"]),
        scope=Scope(namespace=rng.choice(NAMESPACES), repo=rng.choice(REPOS), labels=labels),
        payload=payload,
    )


def time_per_event(events: list[Event], match: Callable[[Event], list[Rule]]) -> list[float]:
    """Microseconds spent matching each event."""
    gc.collect()
    timings = []
    clock = time.perf_counter_ns
    for event in events:
        start = clock()
        match(event)
        timings.append((clock() - start) / 1000)
    return timings


def percentile(values: list[float], fraction: float) -> float:
    """The value below which `fraction` of the sorted values fall."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(label: str, timings: list[float]) -> tuple[float, float]:
    """Print one row of figures and return (p50, p99)."""
    p50, p99 = percentile(timings, 0.50), percentile(timings, 0.99)
    mean = statistics.fmean(timings)
    print(f"{label:<34} {p50:>9.1f} {p99:>9.1f} {max(timings):>9.1f} {mean:>9.1f}")
    return p50, p99


def main() -> None:
    """Build the rules and events, check the two matchers agree, and print the timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    rules = [random_rule(rng, n) for n in range(args.rules)]
    events = [random_event(rng, n) for n in range(args.events)]

    start = time.perf_counter()
    ruleset = RuleSet(rules)
    build_ms = (time.perf_counter() - start) * 1000
    uncached = RuleSet(rules, cache_size=0)

    matches = [ruleset.match(event) for event in events]
    if any(found != ruleset.scan(event) for found, event in zip(matches, events, strict=True)):
        raise SystemExit("indexed match disagrees with the linear scan")
    average = statistics.fmean(len(found) for found in matches)

    print(f"{args.rules} rules (built in {build_ms:.0f} ms), {args.events} events, {average:.2f} matches/event")
    print(f"{'per-event match time, µs':<34} {'p50':>9} {'p99':>9} {'max':>9} {'mean':>9}")
    fresh = RuleSet(rules)
    report("indexed, cold candidate cache", time_per_event(events, fresh.match))
    p50, p99 = report("indexed, warm candidate cache", time_per_event(events, fresh.match))
    nocache = report("indexed, cache disabled", time_per_event(events, uncached.match))
    base50, base99 = report("baseline: linear scan", time_per_event(events, ruleset.scan))
    print(f"speed-up over linear scan: p50 x{base50 / p50:.0f}, p99 x{base99 / p99:.0f} (warm cache); ", end="")
    print(f"p50 x{base50 / nocache[0]:.0f}, p99 x{base99 / nocache[1]:.0f} (cache disabled)")


if __name__ == "__main__":
    main()
