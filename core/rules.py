"""The rules engine: which rules an event matches, and why the others do not.

A `RuleSet` compiles rules once (globs, regexes, field paths, severities) and indexes them by tenant and by
kind, so matching an event only evaluates the rules that could apply to its tenant and kind. The engine is
pure: no I/O, no clock, no chat SDKs.

Checks run in this order, and `explain` reports the first that fails:
enabled, tenant, kind, namespaces, repos, labels, severity, where[0], where[1], ...

Field conditions (`Match.where`) address the event's JSON form with dotted paths ("payload.verdict",
"scope.labels.team", "severity", "payload.items.0.name"); list items are addressed by index. Semantics:

* A field that is absent or null is *missing*. Every operator fails on a missing field except
  `exists: false` and `ne`: "verdict ne pass" holds for an event that has no verdict at all, which is what
  someone routing "everything that did not pass" expects. Use `exists` to test for presence.
* `eq`, `ne` and `in` compare JSON values exactly: no coercion, and booleans never equal numbers.
* `gt`, `gte`, `lt`, `lte` compare numbers, coercing numeric strings on both sides; on the field "severity"
  they compare severities by rank (info < low < medium < high < critical). Anything else fails.
* `contains`: substring of a string, item of a list, key of an object.
* `regex`: `re.search` on a string value; non-strings fail.

No operator raises on odd data: a type mismatch is simply a failed check.
"""

from __future__ import annotations

import fnmatch
import functools
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from core.models.common import Severity
from core.models.events import Event
from core.models.rules import Condition, ConditionOp, Rule

__all__ = ["DEFAULT_CACHE_SIZE", "RuleSet", "RuleVerdict"]

_MISSING: Any = object()
_GLOB_CHARS = frozenset("*?[")
_PLAIN_TYPES = (str, int, float, bool)
_SEVERITY_RANK: dict[str, int] = {s.value: s.rank for s in Severity}
_RANK_COUNT = len(_SEVERITY_RANK)
# pydantic's model_fields is a computed property; field resolution needs the names on every step.
_FIELD_NAMES: dict[type[BaseModel], frozenset[str]] = {}
_ORDERING: dict[ConditionOp, Callable[[Any, Any], bool]] = {
    ConditionOp.gt: operator.gt,
    ConditionOp.gte: operator.ge,
    ConditionOp.lt: operator.lt,
    ConditionOp.lte: operator.le,
}
# Candidate lists are cached per (tenant, kind, severity); clients choose tenants and kinds, so it is bounded.
DEFAULT_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class RuleVerdict:
    """Whether one rule matched an event and, if not, the first check that failed."""

    rule: str
    matched: bool
    check: str | None = None
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The verdict as a JSON-ready dict."""
        return {"rule": self.rule, "matched": self.matched, "check": self.check, "detail": self.detail}


class RuleSet:
    """An immutable, indexed set of rules; build a new one when the rules change.

    Rules are compiled when the set is built: changing a Rule object afterwards does not change the set.
    Safe to share between threads and tasks; the only mutable state is a bounded cache of candidate lists.
    """

    def __init__(self, rules: Iterable[Rule] = (), *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._rules: tuple[Rule, ...] = tuple(rules)
        self._compiled = tuple(_CompiledRule(position, rule) for position, rule in enumerate(self._rules))
        self._by_tenant: dict[str, _KindIndex] = {}
        for compiled in self._compiled:
            if compiled.rule.enabled:
                self._by_tenant.setdefault(compiled.rule.tenant, _KindIndex()).add(compiled)
        for index in self._by_tenant.values():
            index.freeze()
        self._wildcard = self._by_tenant.get("*")
        self._cache: dict[tuple[str, str, int], tuple[_CompiledRule, ...]] = {}
        self._cache_size = cache_size

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rules in configuration order."""
        return self._rules

    def __len__(self) -> int:
        return len(self._rules)

    def match(self, event: Event) -> list[Rule]:
        """The enabled rules that match the event, in configuration order."""
        matched = []
        for compiled in self._candidates(event.tenant, event.kind, event.severity.rank):
            for check in compiled.checks:
                if not check.test(event):
                    break
            else:
                matched.append(compiled.rule)
        return matched

    def scan(self, event: Event) -> list[Rule]:
        """Like `match`, but checks every rule without the index: the reference `match` must agree with."""
        matched = []
        for compiled in self._compiled:
            if not compiled.rule.enabled:
                continue
            for check in compiled.all_checks:
                if not check.test(event):
                    break
            else:
                matched.append(compiled.rule)
        return matched

    def explain(self, event: Event) -> list[RuleVerdict]:
        """A verdict for every rule, in configuration order, naming the first failed check of each miss."""
        return [compiled.verdict(event) for compiled in self._compiled]

    def _candidates(self, tenant: str, kind: str, rank: int) -> tuple[_CompiledRule, ...]:
        """The rules whose tenant, kind and min_severity admit the event, in configuration order."""
        key = (tenant, kind, rank)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        found: dict[int, _CompiledRule] = {}
        if self._wildcard is not None:
            self._wildcard.collect(kind, rank, found)
        if tenant != "*" and (own := self._by_tenant.get(tenant)) is not None:
            own.collect(kind, rank, found)
        candidates = tuple(found[position] for position in sorted(found))
        if self._cache_size > 0:
            if len(self._cache) >= self._cache_size:
                # Evict the oldest entry (dicts keep insertion order): no LRU bookkeeping on hits, and no
                # latency spike from freeing the whole cache at once.
                self._cache.pop(next(iter(self._cache)), None)
            self._cache[key] = candidates
        return candidates


class _KindIndex:
    """The enabled rules of one tenant, by kind: exact kinds, globs by literal prefix, and kind-less rules.

    Exact and kind-less buckets are kept per event severity rank as ready-made {position: rule} dicts, so
    collecting them is one C-level dict.update and min_severity costs nothing on the hot path.
    """

    __slots__ = ("_by_prefix", "_catch_all", "_exact", "_prefix_lengths")

    def __init__(self) -> None:
        self._exact: dict[str, _ByRank] = {}
        self._by_prefix: dict[str, list[_CompiledRule]] = {}
        self._catch_all = _ByRank()
        self._prefix_lengths: tuple[int, ...] = ()

    def add(self, compiled: _CompiledRule) -> None:
        """File a rule under each of its kind patterns."""
        if compiled.kinds is None:
            self._catch_all.add(compiled)
            return
        for pattern in compiled.kinds.patterns:
            if _is_glob(pattern):
                bucket = self._by_prefix.setdefault(_literal_prefix(pattern), [])
                if compiled not in bucket[-1:]:
                    bucket.append(compiled)
            else:
                self._exact.setdefault(pattern, _ByRank()).add(compiled)

    def freeze(self) -> None:
        """Finish building: note which prefix lengths occur, so lookups probe only those."""
        self._prefix_lengths = tuple(sorted({len(prefix) for prefix in self._by_prefix}))

    def collect(self, kind: str, rank: int, found: dict[int, _CompiledRule]) -> None:
        """Add the rules that admit this kind and severity rank to `found`, keyed by position."""
        exact = self._exact.get(kind)
        if exact is not None:
            found.update(exact.admitting[rank])
        found.update(self._catch_all.admitting[rank])
        # Only prefixes of the kind can hold matching globs, and only lengths that occur need probing.
        for length in self._prefix_lengths:
            if length > len(kind):
                break
            for compiled in self._by_prefix.get(kind[:length], ()):
                if (
                    compiled.min_rank <= rank
                    and compiled.position not in found
                    and compiled.kinds is not None
                    and compiled.kinds.matches(kind)
                ):
                    found[compiled.position] = compiled


class _ByRank:
    """A bucket of rules, viewed once per severity rank: admitting[r] holds the rules with min_severity <= r."""

    __slots__ = ("admitting",)

    def __init__(self) -> None:
        self.admitting: tuple[dict[int, _CompiledRule], ...] = tuple({} for _ in range(_RANK_COUNT))

    def add(self, compiled: _CompiledRule) -> None:
        """Show the rule at every rank its min_severity admits."""
        for rank in range(compiled.min_rank, len(self.admitting)):
            self.admitting[rank][compiled.position] = compiled


class _CompiledRule:
    """One rule with its patterns compiled and its checks laid out in evaluation order."""

    __slots__ = ("all_checks", "checks", "kinds", "min_rank", "position", "rule")

    def __init__(self, position: int, rule: Rule) -> None:
        self.position = position
        self.rule = rule
        spec = rule.match
        self.kinds = _glob_set(tuple(spec.kinds)) if spec.kinds else None
        self.min_rank = spec.min_severity.rank
        # The index settles tenant, kind and severity for match(); explain() and scan() test them here.
        gate: list[_Check] = [_TenantCheck(rule.tenant)]
        if self.kinds is not None:
            gate.append(_KindCheck(self.kinds))
        scope: list[_Check] = []
        if spec.namespaces:
            scope.append(_NamespaceCheck(_glob_set(tuple(spec.namespaces))))
        if spec.repos:
            scope.append(_RepoCheck(_glob_set(tuple(spec.repos))))
        scope.extend(_LabelCheck(key, pattern) for key, pattern in spec.labels.items())
        severity: list[_Check] = [_SeverityCheck(spec.min_severity)] if self.min_rank > 0 else []
        where = [_ConditionCheck(index, condition) for index, condition in enumerate(spec.where)]
        self.checks: tuple[_Check, ...] = (*scope, *where)
        self.all_checks: tuple[_Check, ...] = (*gate, *scope, *severity, *where)

    def verdict(self, event: Event) -> RuleVerdict:
        """Evaluate every check in order and report the first failure."""
        if not self.rule.enabled:
            return RuleVerdict(self.rule.name, False, "enabled", "rule is disabled")
        for check in self.all_checks:
            if not check.test(event):
                return RuleVerdict(self.rule.name, False, check.name, check.describe(event))
        return RuleVerdict(self.rule.name, True)


# ---------------------------------------------------------------- globs


def _is_glob(pattern: str) -> bool:
    return not _GLOB_CHARS.isdisjoint(pattern)


def _literal_prefix(pattern: str) -> str:
    cut = min((i for i, char in enumerate(pattern) if char in _GLOB_CHARS), default=len(pattern))
    return pattern[:cut]


@functools.lru_cache(maxsize=4096)
def _glob_set(patterns: tuple[str, ...]) -> _GlobSet:
    # Rules repeat the same pattern lists a lot; sharing the immutable compiled form makes builds cheap.
    return _GlobSet(patterns)


class _GlobSet:
    """Case-sensitive fnmatch patterns: literals in a set, globs folded into one compiled alternation."""

    __slots__ = ("_exact", "_regex", "patterns")

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = tuple(patterns)
        self._exact = frozenset(p for p in patterns if not _is_glob(p))
        globs = [fnmatch.translate(p) for p in patterns if _is_glob(p)]
        self._regex = re.compile("|".join(globs)).match if globs else None

    def matches(self, value: str) -> bool:
        """Whether any pattern matches the whole value."""
        return value in self._exact or (self._regex is not None and self._regex(value) is not None)


# ---------------------------------------------------------------- checks


class _Check:
    """One test of a rule against an event; `describe` explains a failure to a human."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def test(self, event: Event) -> bool:
        """Whether the event passes."""
        raise NotImplementedError

    def describe(self, event: Event) -> str:
        """Why the event fails."""
        raise NotImplementedError


class _TenantCheck(_Check):
    __slots__ = ("_tenant",)

    def __init__(self, tenant: str) -> None:
        super().__init__("tenant")
        self._tenant = tenant

    def test(self, event: Event) -> bool:
        return self._tenant == "*" or self._tenant == event.tenant

    def describe(self, event: Event) -> str:
        return f"rule is for tenant {self._tenant!r}, event is from tenant {event.tenant!r}"


class _KindCheck(_Check):
    __slots__ = ("_kinds",)

    def __init__(self, kinds: _GlobSet) -> None:
        super().__init__("kind")
        self._kinds = kinds

    def test(self, event: Event) -> bool:
        return self._kinds.matches(event.kind)

    def describe(self, event: Event) -> str:
        return f"event kind {event.kind!r} matches none of {list(self._kinds.patterns)}"


class _NamespaceCheck(_Check):
    __slots__ = ("_globs",)

    def __init__(self, globs: _GlobSet) -> None:
        super().__init__("namespaces")
        self._globs = globs

    def test(self, event: Event) -> bool:
        return self._globs.matches(event.scope.namespace)

    def describe(self, event: Event) -> str:
        return f"event namespace {event.scope.namespace!r} matches none of {list(self._globs.patterns)}"


class _RepoCheck(_Check):
    __slots__ = ("_globs",)

    def __init__(self, globs: _GlobSet) -> None:
        super().__init__("repos")
        self._globs = globs

    def test(self, event: Event) -> bool:
        return self._globs.matches(event.scope.repo)

    def describe(self, event: Event) -> str:
        return f"event repo {event.scope.repo!r} matches none of {list(self._globs.patterns)}"


class _LabelCheck(_Check):
    __slots__ = ("_globs", "_key", "_pattern")

    def __init__(self, key: str, pattern: str) -> None:
        super().__init__("labels")
        self._key = key
        self._pattern = pattern
        self._globs = _glob_set((pattern,))

    def test(self, event: Event) -> bool:
        value = event.scope.labels.get(self._key)
        return value is not None and self._globs.matches(value)

    def describe(self, event: Event) -> str:
        value = event.scope.labels.get(self._key)
        if value is None:
            return f"event has no label {self._key!r}, expected {self._key} = {self._pattern!r}"
        return f"event label {self._key} = {value!r} does not match {self._pattern!r}"


class _SeverityCheck(_Check):
    __slots__ = ("_minimum",)

    def __init__(self, minimum: Severity) -> None:
        super().__init__("severity")
        self._minimum = minimum

    def test(self, event: Event) -> bool:
        return event.severity.rank >= self._minimum.rank

    def describe(self, event: Event) -> str:
        return f"event severity {event.severity.value} is below min_severity {self._minimum.value}"


class _ConditionCheck(_Check):
    __slots__ = ("_condition", "_on_missing", "_on_value", "_path", "_why_never")

    def __init__(self, index: int, condition: Condition) -> None:
        super().__init__(f"where[{index}]")
        self._condition = condition
        self._path = _compile_path(condition.field)
        self._on_value, self._on_missing, self._why_never = _compile_operator(condition)

    def test(self, event: Event) -> bool:
        value = _resolve(event, self._path)
        return self._on_missing if value is _MISSING else self._on_value(value)

    def describe(self, event: Event) -> str:
        field, op, expected = self._condition.field, self._condition.op, self._condition.value
        value = _resolve(event, self._path)
        if op is ConditionOp.exists:
            if value is _MISSING:
                return f"{field} is missing, expected it to exist"
            return f"{field} = {_show(value)}, expected it not to exist"
        found = "is missing" if value is _MISSING else f"= {_show(value)}"
        why = self._why_never or _mismatch(op, field, value)
        reason = f" ({why})" if why else ""
        return f"{field} {found}, expected {op.value} {_show(expected)}{reason}"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _mismatch(op: ConditionOp, field: str, value: Any) -> str:
    """Name a type mismatch, the failure a reader is least likely to spot in the values alone."""
    if value is _MISSING:
        return ""
    if op in _ORDERING and field != "severity" and _as_number(value) is None:
        return "not a number"
    if op is ConditionOp.regex and not isinstance(value, str):
        return "not a string"
    if op is ConditionOp.contains and not isinstance(value, str | list | dict):
        return "neither a string, a list nor an object"
    return ""


# ---------------------------------------------------------------- field conditions


def _compile_path(field: str) -> tuple[str, ...]:
    path = tuple(field.split("."))
    # Only declared fields are reachable, so a path can never wander into methods or dunder attributes.
    return path if path[0] in _field_names(Event) else ()


def _resolve(event: Event, path: tuple[str, ...]) -> Any:
    """The JSON value at a dotted path, or _MISSING; walks attributes lazily instead of dumping the event."""
    if not path:
        return _MISSING
    current: Any = getattr(event, path[0])
    for segment in path[1:]:
        if current is None:
            return _MISSING
        if isinstance(current, dict):
            current = current.get(segment)
        elif isinstance(current, BaseModel):
            if segment not in _field_names(type(current)):
                return _MISSING
            current = getattr(current, segment)
        elif isinstance(current, list):
            # isascii: str.isdigit() also accepts digits such as "²" that int() rejects.
            if not (segment.isascii() and segment.isdigit()) or int(segment) >= len(current):
                return _MISSING
            current = current[int(segment)]
        else:
            return _MISSING
    if current is None:
        return _MISSING
    if type(current) in _PLAIN_TYPES:
        return current
    if isinstance(current, Enum):
        return current.value
    # Models, datetimes and containers become exactly what model_dump(mode="json") would produce.
    return to_jsonable_python(current)


def _field_names(model: type[BaseModel]) -> frozenset[str]:
    names = _FIELD_NAMES.get(model)
    if names is None:
        names = _FIELD_NAMES[model] = frozenset(model.model_fields)
    return names


def _compile_operator(condition: Condition) -> tuple[Callable[[Any], bool], bool, str]:
    """(test for a present value, result for a missing value, why it can never match or "")."""
    op, expected = condition.op, condition.value
    if op is ConditionOp.eq:
        return (lambda value: _equals(value, expected)), False, ""
    if op is ConditionOp.ne:
        return (lambda value: not _equals(value, expected)), True, ""
    if op in _ORDERING:
        return _compile_ordering(_ORDERING[op], expected, by_severity=condition.field == "severity")
    if op is ConditionOp.in_:
        return _compile_in(expected), False, ""
    if op is ConditionOp.contains:
        return (lambda value: _contains(value, expected)), False, ""
    if op is ConditionOp.regex:
        search = re.compile(expected).search
        return (lambda value: isinstance(value, str) and search(value) is not None), False, ""
    want = expected is not False  # exists: no value means true
    return (lambda value: want), not want, ""


def _compile_ordering(
    compare: Callable[[Any, Any], bool], expected: Any, *, by_severity: bool
) -> tuple[Callable[[Any], bool], bool, str]:
    if by_severity:
        rank = _SEVERITY_RANK.get(expected.lower()) if isinstance(expected, str) else None
        if rank is None:
            return (lambda value: False), False, "the expected value is not a severity"
        return (lambda value: compare(_SEVERITY_RANK.get(value, -1), rank)), False, ""
    bound = _as_number(expected)
    if bound is None:
        return (lambda value: False), False, "the expected value is not a number"

    def ordered(value: Any) -> bool:
        number = _as_number(value)
        return number is not None and compare(number, bound)

    return ordered, False, ""


def _compile_in(options: list[Any]) -> Callable[[Any], bool]:
    # Strings dominate in practice, so they get a set lookup; other values keep exact JSON equality.
    strings = frozenset(option for option in options if isinstance(option, str))
    others = [option for option in options if not isinstance(option, str)]

    def contained(value: Any) -> bool:
        if isinstance(value, str):
            return value in strings
        return any(_equals(value, option) for option in others)

    return contained


def _equals(left: Any, right: Any) -> bool:
    # In Python True == 1; in JSON a boolean and a number are different values.
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    return bool(left == right)


def _contains(value: Any, expected: Any) -> bool:
    if isinstance(value, str):
        return isinstance(expected, str) and expected in value
    if isinstance(value, list):
        return any(_equals(item, expected) for item in value)
    if isinstance(value, dict):
        return isinstance(expected, str) and expected in value
    return False


def _as_number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        for parse in (int, float):
            try:
                return parse(value)
            except ValueError:
                continue
    return None
