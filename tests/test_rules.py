"""The rules engine: operators, globs, tenants, severity, ordering, explanations, and agreement with a linear scan."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from core.models.common import Severity
from core.models.events import Event, Link, Scope
from core.models.rules import Condition, Match, Rule
from core.rules import RuleSet, RuleVerdict

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def make_event(**overrides: Any) -> Event:
    """A CI failure in acme's payments repo; override any field."""
    fields: dict[str, Any] = {
        "id": "evt-1",
        "kind": "ci.pipeline.failed",
        "tenant": "acme",
        "ts": NOW,
        "received_at": NOW,
        "severity": Severity.high,
        "title": "Deploy to prod failed",
        "scope": Scope(namespace="prod-eu", repo="acme/payments-api", labels={"team": "payments", "env": "prod"}),
        "payload": {
            "verdict": "fail",
            "retries": 3,
            "ratio": 0.25,
            "count_text": "12",
            "word": "twelve",
            "flag": True,
            "nothing": None,
            "tags": ["pci", "customer", 7],
            "meta": {"owner": "sre", "nested": {"depth": 2}},
            "items": [{"name": "build"}, {"name": "test"}],
            "cluster": "eu-west-2",
        },
        "links": [Link(title="run", url="https://ci.example/run/1")],
    }
    fields.update(overrides)
    return Event(**fields)


def make_rule(name: str = "r", *, tenant: str = "*", enabled: bool = True, **match: Any) -> Rule:
    """A rule with the given Match fields."""
    return Rule(name=name, tenant=tenant, enabled=enabled, match=Match(**match))


def matches(rule: Rule, event: Event) -> bool:
    """Whether a one-rule set matches, insisting that match, scan and explain all agree."""
    ruleset = RuleSet([rule])
    found = bool(ruleset.match(event))
    assert bool(ruleset.scan(event)) is found
    assert ruleset.explain(event)[0].matched is found
    return found


# ---------------------------------------------------------------- field conditions


@pytest.mark.parametrize(
    ("field", "op", "value", "expected"),
    [
        # eq / ne: exact JSON equality, booleans are not numbers
        ("payload.verdict", "eq", "fail", True),
        ("payload.verdict", "eq", "Fail", False),
        ("payload.retries", "eq", 3, True),
        ("payload.retries", "eq", 3.0, True),
        ("payload.retries", "eq", "3", False),
        ("payload.flag", "eq", True, True),
        ("payload.flag", "eq", 1, False),
        ("payload.retries", "eq", True, False),
        ("payload.meta", "eq", {"owner": "sre", "nested": {"depth": 2}}, True),
        ("payload.absent", "eq", "fail", False),
        ("payload.verdict", "ne", "pass", True),
        ("payload.verdict", "ne", "fail", False),
        ("payload.absent", "ne", "pass", True),
        ("payload.nothing", "ne", "pass", True),
        # ordering: numbers, numeric strings coerced on either side, everything else fails
        ("payload.retries", "gt", 2, True),
        ("payload.retries", "gt", 3, False),
        ("payload.retries", "gte", 3, True),
        ("payload.retries", "gte", 4, False),
        ("payload.retries", "lt", 4, True),
        ("payload.retries", "lt", 3, False),
        ("payload.retries", "lte", 3, True),
        ("payload.retries", "lte", 2, False),
        ("payload.ratio", "lt", 0.5, True),
        ("payload.ratio", "gt", "0.1", True),
        ("payload.count_text", "gt", 11, True),
        ("payload.count_text", "gt", 12, False),
        ("payload.word", "gt", 1, False),
        ("payload.flag", "gte", 0, False),
        ("payload.tags", "gt", 1, False),
        ("payload.retries", "gt", "many", False),
        ("payload.absent", "lt", 100, False),
        ("title", "gt", "A", False),
        # severity fields compare by rank
        ("severity", "gte", "high", True),
        ("severity", "gt", "high", False),
        ("severity", "gt", "medium", True),
        ("severity", "lt", "critical", True),
        ("severity", "lte", "low", False),
        ("severity", "gte", "HIGH", True),
        ("severity", "gte", "urgent", False),
        ("severity", "gte", 3, False),
        ("severity", "eq", "high", True),
        ("severity", "in", ["high", "critical"], True),
        # in
        ("payload.verdict", "in", ["fail", "error"], True),
        ("payload.verdict", "in", ["pass", "skip"], False),
        ("payload.retries", "in", [1, 2, 3], True),
        ("payload.retries", "in", ["3"], False),
        ("payload.flag", "in", [1], False),
        ("payload.flag", "in", [True], True),
        ("payload.absent", "in", ["fail"], False),
        ("payload.verdict", "in", [], False),
        # contains: substring, list item, object key
        ("title", "contains", "prod", True),
        ("title", "contains", "Prod", False),
        ("payload.tags", "contains", "pci", True),
        ("payload.tags", "contains", "gdpr", False),
        ("payload.tags", "contains", 7, True),
        ("payload.tags", "contains", "7", False),
        ("payload.meta", "contains", "owner", True),
        ("payload.meta", "contains", "sre", False),
        ("payload.retries", "contains", 3, False),
        ("title", "contains", 3, False),
        ("payload.absent", "contains", "x", False),
        # regex: re.search on strings only
        ("payload.cluster", "regex", r"^eu-", True),
        ("payload.cluster", "regex", r"west", True),
        ("payload.cluster", "regex", r"^west", False),
        ("payload.cluster", "regex", r"^EU-", False),
        ("payload.retries", "regex", r"3", False),
        ("payload.absent", "regex", r".*", False),
        # exists: null counts as missing
        ("payload.verdict", "exists", None, True),
        ("payload.verdict", "exists", True, True),
        ("payload.verdict", "exists", False, False),
        ("payload.absent", "exists", True, False),
        ("payload.absent", "exists", False, True),
        ("payload.nothing", "exists", True, False),
        ("payload.nothing", "exists", False, True),
        ("dedup_key", "exists", True, False),
        # paths: nested objects, list indexes, models, enums, datetimes
        ("payload.meta.nested.depth", "eq", 2, True),
        ("payload.meta.nested.depth.deeper", "exists", True, False),
        ("payload.items.1.name", "eq", "test", True),
        ("payload.items.2.name", "exists", True, False),
        ("payload.items.-1.name", "exists", True, False),
        ("payload.items.²", "exists", True, False),
        ("payload.items.name", "exists", True, False),
        ("scope.labels.team", "eq", "payments", True),
        ("scope.labels.missing", "exists", False, True),
        ("scope.namespace", "regex", r"^prod-", True),
        ("scope.nonfield", "exists", True, False),
        ("links.0.url", "contains", "ci.example", True),
        ("status", "eq", "firing", True),
        ("kind", "eq", "ci.pipeline.failed", True),
        ("ts", "eq", "2025-03-01T12:00:00Z", True),
        ("scope", "contains", "labels", True),
        ("nonfield", "exists", False, True),
        ("model_fields", "exists", True, False),
        ("__class__", "exists", True, False),
    ],
)
def test_condition_operators(field: str, op: str, value: Any, expected: bool) -> None:
    rule = make_rule(where=[Condition(field=field, op=op, value=value)])
    assert matches(rule, make_event()) is expected


def test_all_conditions_must_hold() -> None:
    passing = Condition(field="payload.verdict", op="eq", value="fail")
    failing = Condition(field="payload.retries", op="gt", value=10)
    assert matches(make_rule(where=[passing, passing]), make_event())
    assert not matches(make_rule(where=[passing, failing]), make_event())
    assert not matches(make_rule(where=[failing, passing]), make_event())


# ---------------------------------------------------------------- globs and scope


@pytest.mark.parametrize(
    ("kinds", "kind", "expected"),
    [
        ([], "anything.at.all", True),
        (["ci.pipeline.failed"], "ci.pipeline.failed", True),
        (["ci.pipeline.failed"], "ci.pipeline.failed.twice", False),
        (["ci.pipeline"], "ci.pipeline.failed", False),
        (["ci.*"], "ci.pipeline.failed", True),
        (["ci.*"], "ci", False),
        (["ci.*"], "cd.pipeline.failed", False),
        (["ci.*"], "xci.pipeline.failed", False),
        (["*.failed"], "deploy.rollout.failed", True),
        (["*.failed"], "deploy.rollout.failed.not", False),
        (["ci.*.failed"], "ci.job.failed", True),
        (["ci.?ob.*"], "ci.job.failed", True),
        (["ci.?ob.*"], "ci.blob.failed", False),
        (["[cd]i.*"], "di.job.failed", True),
        (["[!c]i.*"], "ci.job.failed", False),
        (["CI.*"], "ci.job.failed", False),
        (["ci.JOB.failed"], "ci.job.failed", False),
        (["deploy.*", "ci.job.*"], "ci.job.failed", True),
        (["deploy.*", "ci.job.started"], "ci.job.failed", False),
        (["ci.job.failed", "ci.*"], "ci.job.failed", True),
        (["*"], "x", True),
    ],
)
def test_kind_globs(kinds: list[str], kind: str, expected: bool) -> None:
    assert matches(make_rule(kinds=kinds), make_event(kind=kind)) is expected


@pytest.mark.parametrize(
    ("match", "scope", "expected"),
    [
        ({"namespaces": ["prod-*"]}, {"namespace": "prod-eu"}, True),
        ({"namespaces": ["prod-*"]}, {"namespace": "staging"}, False),
        ({"namespaces": ["prod-*"]}, {"namespace": "Prod-eu"}, False),
        ({"namespaces": ["prod-*"]}, {"namespace": "not-prod-eu"}, False),
        ({"namespaces": ["prod-eu"]}, {"namespace": "prod-eu-2"}, False),
        ({"namespaces": ["staging", "qa"]}, {"namespace": "qa"}, True),
        ({"namespaces": ["staging", "qa"]}, {"namespace": ""}, False),
        ({"namespaces": ["*"]}, {"namespace": ""}, True),
        ({"repos": ["acme/*"]}, {"repo": "acme/payments-api"}, True),
        ({"repos": ["acme/payments-*"]}, {"repo": "acme/search"}, False),
        ({"repos": ["acme/search", "other/*"]}, {"repo": "other/thing"}, True),
        ({"labels": {"team": "payments"}}, {"labels": {"team": "payments"}}, True),
        ({"labels": {"team": "payments"}}, {"labels": {"team": "payments-eu"}}, False),
        ({"labels": {"team": "payments*"}}, {"labels": {"team": "payments-eu"}}, True),
        ({"labels": {"team": "*"}}, {"labels": {"team": ""}}, True),
        ({"labels": {"team": "*"}}, {"labels": {}}, False),
        ({"labels": {"team": ""}}, {"labels": {"team": ""}}, True),
        ({"labels": {"team": "pay?ents"}}, {"labels": {"team": "payments"}}, True),
        ({"labels": {"team": "payments", "env": "prod"}}, {"labels": {"team": "payments", "env": "dev"}}, False),
        ({"labels": {"team": "payments", "env": "prod"}}, {"labels": {"team": "payments", "env": "prod"}}, True),
        ({"labels": {"Team": "payments"}}, {"labels": {"team": "payments"}}, False),
        ({"namespaces": ["prod-*"], "repos": ["acme/*"]}, {"namespace": "prod-us", "repo": "acme/x"}, True),
        ({"namespaces": ["prod-*"], "repos": ["acme/*"]}, {"namespace": "prod-us", "repo": "evil/x"}, False),
    ],
)
def test_scope_globs(match: dict[str, Any], scope: dict[str, Any], expected: bool) -> None:
    assert matches(make_rule(**match), make_event(scope=Scope(**scope))) is expected


# ---------------------------------------------------------------- tenants, severity, enabled


@pytest.mark.parametrize(
    ("rule_tenant", "event_tenant", "expected"),
    [
        ("*", "acme", True),
        ("*", "globex", True),
        ("acme", "acme", True),
        ("acme", "globex", False),
        ("acme", "Acme", False),
    ],
)
def test_tenants(rule_tenant: str, event_tenant: str, expected: bool) -> None:
    assert matches(make_rule(tenant=rule_tenant), make_event(tenant=event_tenant)) is expected


@pytest.mark.parametrize(
    ("minimum", "severity", "expected"),
    [
        (Severity.info, Severity.info, True),
        (Severity.medium, Severity.low, False),
        (Severity.medium, Severity.medium, True),
        (Severity.medium, Severity.critical, True),
        (Severity.critical, Severity.high, False),
        (Severity.critical, Severity.critical, True),
    ],
)
def test_min_severity(minimum: Severity, severity: Severity, expected: bool) -> None:
    rule = make_rule(kinds=["ci.*"], min_severity=minimum)
    assert matches(rule, make_event(severity=severity)) is expected


@pytest.mark.parametrize("kinds", [[], ["ci.pipeline.failed"], ["ci.*"]])
def test_disabled_rules_never_match(kinds: list[str]) -> None:
    rule = make_rule(enabled=False, kinds=kinds)
    assert not matches(rule, make_event())
    assert matches(rule.model_copy(update={"enabled": True}), make_event())


# ---------------------------------------------------------------- ordering


def test_results_keep_configuration_order_across_index_buckets() -> None:
    rules = [
        make_rule("acme-glob", tenant="acme", kinds=["ci.*"]),
        make_rule("any-exact", kinds=["ci.pipeline.failed"]),
        make_rule("acme-catch-all", tenant="acme"),
        make_rule("other-tenant", tenant="globex"),
        make_rule("any-glob", kinds=["*.failed"]),
        make_rule("acme-exact", tenant="acme", kinds=["ci.pipeline.failed"]),
        make_rule("any-catch-all"),
        make_rule("acme-prefix-glob", tenant="acme", kinds=["ci.pipe*"]),
    ]
    ruleset = RuleSet(rules)
    expected = [r.name for r in rules if r.name != "other-tenant"]
    for _ in range(2):  # the second round is served from the candidate cache
        assert [r.name for r in ruleset.match(make_event())] == expected
    assert [v.rule for v in ruleset.explain(make_event())] == [r.name for r in rules]


def test_a_rule_matching_through_several_patterns_appears_once() -> None:
    rule = make_rule(kinds=["ci.pipeline.failed", "ci.*", "ci.pipe*", "*"])
    assert RuleSet([rule]).match(make_event()) == [rule]


def test_empty_rule_set() -> None:
    assert RuleSet([]).match(make_event()) == []
    assert RuleSet().explain(make_event()) == []
    assert len(RuleSet()) == 0


def test_candidate_cache_stays_bounded() -> None:
    ruleset = RuleSet([make_rule("any", kinds=["*.failed"])], cache_size=2)
    for number in range(10):
        assert ruleset.match(make_event(kind=f"k{number}.failed"))
    # Kinds are chosen by clients, so an unbounded cache would be a memory leak.
    assert len(ruleset._cache) <= 2


# ---------------------------------------------------------------- explain


@pytest.mark.parametrize(
    ("rule", "event", "check", "detail"),
    [
        (make_rule(enabled=False, tenant="globex"), make_event(), "enabled", "rule is disabled"),
        (
            make_rule(tenant="globex", min_severity="critical"),
            make_event(),
            "tenant",
            "rule is for tenant 'globex', event is from tenant 'acme'",
        ),
        (
            make_rule(kinds=["deploy.*", "cd.run"], min_severity="critical"),
            make_event(),
            "kind",
            "event kind 'ci.pipeline.failed' matches none of ['deploy.*', 'cd.run']",
        ),
        (
            make_rule(namespaces=["staging"], repos=["x/*"]),
            make_event(),
            "namespaces",
            "event namespace 'prod-eu' matches none of ['staging']",
        ),
        (
            make_rule(namespaces=["staging"], min_severity="critical"),
            make_event(severity=Severity.low),
            "namespaces",
            "event namespace 'prod-eu' matches none of ['staging']",
        ),
        (make_rule(repos=["x/*"]), make_event(), "repos", "event repo 'acme/payments-api' matches none of ['x/*']"),
        (
            make_rule(labels={"team": "search*"}),
            make_event(),
            "labels",
            "event label team = 'payments' does not match 'search*'",
        ),
        (
            make_rule(labels={"owner": "sre"}),
            make_event(),
            "labels",
            "event has no label 'owner', expected owner = 'sre'",
        ),
        (
            make_rule(min_severity="critical", where=[Condition(field="payload.absent", op="exists")]),
            make_event(severity=Severity.low),
            "severity",
            "event severity low is below min_severity critical",
        ),
        (
            make_rule(
                where=[
                    Condition(field="payload.verdict", op="eq", value="pass"),
                    Condition(field="payload.verdict", op="ne", value="pass"),
                ]
            ),
            make_event(payload={"verdict": "pass"}),
            "where[1]",
            "payload.verdict = 'pass', expected ne 'pass'",
        ),
        (
            make_rule(where=[Condition(field="payload.ticket", op="eq", value="OPS-1")]),
            make_event(),
            "where[0]",
            "payload.ticket is missing, expected eq 'OPS-1'",
        ),
        (
            make_rule(where=[Condition(field="payload.ticket", op="exists")]),
            make_event(),
            "where[0]",
            "payload.ticket is missing, expected it to exist",
        ),
        (
            make_rule(where=[Condition(field="payload.verdict", op="exists", value=False)]),
            make_event(),
            "where[0]",
            "payload.verdict = 'fail', expected it not to exist",
        ),
        (
            make_rule(where=[Condition(field="payload.word", op="gte", value=10)]),
            make_event(),
            "where[0]",
            "payload.word = 'twelve', expected gte 10 (not a number)",
        ),
        (
            make_rule(where=[Condition(field="payload.retries", op="gt", value="lots")]),
            make_event(),
            "where[0]",
            "payload.retries = 3, expected gt 'lots' (the expected value is not a number)",
        ),
        (
            make_rule(where=[Condition(field="severity", op="gt", value="urgent")]),
            make_event(),
            "where[0]",
            "severity = 'high', expected gt 'urgent' (the expected value is not a severity)",
        ),
        (
            make_rule(where=[Condition(field="severity", op="gt", value="high")]),
            make_event(),
            "where[0]",
            "severity = 'high', expected gt 'high'",
        ),
        (
            make_rule(where=[Condition(field="payload.retries", op="regex", value="^3$")]),
            make_event(),
            "where[0]",
            "payload.retries = 3, expected regex '^3$' (not a string)",
        ),
        (
            make_rule(where=[Condition(field="payload.retries", op="contains", value=3)]),
            make_event(),
            "where[0]",
            "payload.retries = 3, expected contains 3 (neither a string, a list nor an object)",
        ),
        (
            make_rule(where=[Condition(field="payload.tags", op="contains", value="gdpr")]),
            make_event(),
            "where[0]",
            "payload.tags = ['pci', 'customer', 7], expected contains 'gdpr'",
        ),
    ],
)
def test_explain_names_the_first_failed_check(rule: Rule, event: Event, check: str, detail: str) -> None:
    [verdict] = RuleSet([rule]).explain(event)
    assert verdict == RuleVerdict(rule=rule.name, matched=False, check=check, detail=detail)


def test_explain_truncates_long_values() -> None:
    rule = make_rule(where=[Condition(field="payload.blob", op="eq", value="short")])
    [verdict] = RuleSet([rule]).explain(make_event(payload={"blob": "x" * 5000}))
    assert verdict.detail is not None
    assert len(verdict.detail) < 200
    assert verdict.detail.startswith("payload.blob = 'xxx")


def test_explain_reports_matches_and_serializes_to_json() -> None:
    ruleset = RuleSet([make_rule("hit"), make_rule("miss", tenant="globex")])
    verdicts = [v.as_dict() for v in ruleset.explain(make_event())]
    assert json.loads(json.dumps(verdicts)) == [
        {"rule": "hit", "matched": True, "check": None, "detail": None},
        {
            "rule": "miss",
            "matched": False,
            "check": "tenant",
            "detail": "rule is for tenant 'globex', event is from tenant 'acme'",
        },
    ]


# ---------------------------------------------------------------- generated agreement


VOCAB_KINDS = ["ci.job.failed", "ci.job.started", "ci.build.failed", "deploy.rollout.failed", "db.backup.done", "x"]
VOCAB_KIND_GLOBS = ["ci.*", "*.failed", "ci.job.*", "deploy.*.failed", "?i.*", "[cd]*", "*", "db.backup.d?ne"]
VOCAB_TENANTS = ["acme", "globex", "initech"]
VOCAB_NAMESPACES = ["prod-eu", "prod-us", "staging", ""]
VOCAB_REPOS = ["acme/api", "acme/ui", "other/lib", ""]
VOCAB_TEAMS = ["payments", "payments-eu", "search", ""]
VOCAB_VALUES: list[Any] = ["pass", "fail", 0, 3, "3", 2.5, True, None, ["pci", 3], {"k": "v"}, "eu-west"]
OPS = ["eq", "ne", "gt", "gte", "lt", "lte", "in", "contains", "regex", "exists"]


def random_condition(rng: random.Random) -> Condition:
    """Any operator on a payload field, scope label, title or severity, with a value of any JSON type."""
    field = rng.choice(["payload.a", "payload.b", "payload.a.k", "scope.labels.team", "title", "severity"])
    op = rng.choice(OPS)
    value: Any
    if op == "in":
        value = rng.sample(VOCAB_VALUES, 3)
    elif op == "regex":
        value = rng.choice(["^p", "ail$", "eu", "^$", "[0-9]"])
    elif op == "exists":
        value = rng.choice([None, True, False])
    elif field == "severity" and op in {"gt", "gte", "lt", "lte"}:
        value = rng.choice([*Severity, "bogus"])
    else:
        value = rng.choice(VOCAB_VALUES)
    return Condition(field=field, op=op, value=value)


def random_rule(rng: random.Random, number: int) -> Rule:
    """A rule drawing every Match feature from a small vocabulary, so matches are frequent."""
    kinds = rng.choice([[], [rng.choice(VOCAB_KINDS)], [rng.choice(VOCAB_KIND_GLOBS)], rng.sample(VOCAB_KINDS, 2)])
    return make_rule(
        f"rule-{number}",
        tenant=rng.choice(["*", *VOCAB_TENANTS]),
        enabled=rng.random() > 0.1,
        kinds=kinds + ([rng.choice(VOCAB_KIND_GLOBS)] if rng.random() < 0.2 else []),
        namespaces=rng.choice([[], [], ["prod-*"], ["staging", ""]]),
        repos=rng.choice([[], [], ["acme/*"], ["other/lib"]]),
        labels=rng.choice([{}, {}, {"team": "payments*"}, {"team": "search"}, {"env": "*"}]),
        min_severity=rng.choice(list(Severity)),
        where=[random_condition(rng) for _ in range(rng.choice([0, 0, 1, 2]))],
    )


def random_event(rng: random.Random, number: int) -> Event:
    """An event drawn from the same vocabulary as random_rule."""
    labels = {"team": rng.choice(VOCAB_TEAMS)} if rng.random() < 0.8 else {}
    if rng.random() < 0.5:
        labels["env"] = "prod"
    payload = {key: rng.choice(VOCAB_VALUES) for key in ("a", "b") if rng.random() < 0.8}
    return make_event(
        id=f"evt-{number}",
        kind=rng.choice([*VOCAB_KINDS, "ci", "deploy.x.failed", "unknown.kind"]),
        tenant=rng.choice(VOCAB_TENANTS),
        severity=rng.choice(list(Severity)),
        title=rng.choice(["pass", "fail", "eu-west prod", "3"]),
        scope=Scope(namespace=rng.choice(VOCAB_NAMESPACES), repo=rng.choice(VOCAB_REPOS), labels=labels),
        payload=payload,
    )


@pytest.mark.parametrize("cache_size", [4096, 0, 3])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_match_scan_and_explain_agree_on_generated_cases(seed: int, cache_size: int) -> None:
    rng = random.Random(seed)
    rules = [random_rule(rng, n) for n in range(300)]
    ruleset = RuleSet(rules, cache_size=cache_size)
    total = 0
    for number in range(400):
        event = random_event(rng, number)
        matched = [r.name for r in ruleset.match(event)]
        assert matched == [r.name for r in ruleset.scan(event)]
        verdicts = ruleset.explain(event)
        assert [v.rule for v in verdicts] == [r.name for r in rules]
        assert matched == [v.rule for v in verdicts if v.matched]
        assert all((v.check is None) is v.matched for v in verdicts)
        total += len(matched)
    # Guard against a generator so strict that agreement would be vacuous.
    assert total > 1000


# ---------------------------------------------------------------- scale


def test_ten_thousand_rules_return_exactly_the_right_matches() -> None:
    tenants = [f"tenant-{t}" for t in range(50)]
    kinds = [f"svc{k}.job.failed" for k in range(40)]
    rules = [
        make_rule(f"exact-{t}-{k}", tenant=tenant, kinds=[kind])
        for t, tenant in enumerate(tenants)
        for k, kind in enumerate(kinds)
    ]
    rules += [make_rule(f"glob-{t}", tenant=tenant, kinds=[f"svc{t}.*"]) for t, tenant in enumerate(tenants)]
    rules += [make_rule(f"sev-{n}", kinds=["*.failed"], min_severity="critical") for n in range(3)]
    rules += [make_rule(f"label-{n}", labels={"team": f"team-{n}"}) for n in range(10)]
    rules += [
        make_rule(f"cond-{n}", tenant=tenants[n % 50], where=[Condition(field="payload.n", op="eq", value=n)])
        for n in range(10_000 - len(rules))
    ]
    assert len(rules) == 10_000
    ruleset = RuleSet(rules)

    event = make_event(
        tenant="tenant-7",
        kind="svc7.job.failed",
        severity=Severity.critical,
        scope=Scope(labels={"team": "team-4"}),
        payload={"n": 57},
    )
    expected = ["exact-7-7", "glob-7", "sev-0", "sev-1", "sev-2", "label-4", "cond-57"]
    assert [r.name for r in ruleset.match(event)] == expected
    assert [r.name for r in ruleset.scan(event)] == expected

    quiet = make_event(tenant="tenant-8", kind="svc7.job.failed", severity=Severity.low, scope=Scope(), payload={})
    assert [r.name for r in ruleset.match(quiet)] == ["exact-8-7"]
    assert [r.name for r in ruleset.match(make_event(tenant="nobody", kind="svc1.job.failed"))] == []
