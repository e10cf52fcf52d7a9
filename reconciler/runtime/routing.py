"""Which outgoing server sends a notification (SPEC O2).

The module's enabled rules are tried in ascending ``order`` (ties broken by name,
so the result never depends on load order); the first whose conditions hold (ALL
or ANY) picks its server; when none does, the namespace's enabled primary sends.
A rule whose server is disabled or missing is skipped like one that did not
match: mail keeps flowing through the primary while someone fixes the server,
and the trace makes the skip visible instead of silent.

Conditions compare text. Unless ``caseSensitive`` is set, both sides are
case-folded and ``regex`` runs with IGNORECASE; ``regex`` searches (use ``^``
and ``$`` to anchor). A context field that is not set fails the positive
operators and satisfies the negative ones (``notEquals``, ``notIn``,
``notContains``): "department is not HR" is true when no department is given.

The :class:`RouteDecision` trace lets ``reconcile route`` and the audit say why.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any

from reconciler.config.models.base import Condition, MatchMode, Operator
from reconciler.config.models.outgoing_email_rule import OutgoingEmailRule
from reconciler.config.models.outgoing_server import OutgoingServer

_NEGATIVE = frozenset({Operator.NOT_EQUALS, Operator.NOT_IN, Operator.NOT_CONTAINS})


class RuleVerdict(StrEnum):
    MATCHED = "matched"
    NOT_MATCHED = "not matched"
    RULE_DISABLED = "rule disabled"
    SERVER_DISABLED = "server disabled"
    SERVER_MISSING = "server missing"


class Via(StrEnum):
    RULE = "rule"
    PRIMARY = "primary"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class ConditionResult:
    field: str
    operator: str
    expected: str | tuple[str, ...]
    actual: str | None
    matched: bool
    why: str


@dataclass(frozen=True, slots=True)
class RuleTrace:
    rule: str
    order: int
    match: str
    server: str
    verdict: RuleVerdict
    conditions: tuple[ConditionResult, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class RouteDecision:
    module: str
    context: Mapping[str, str]
    server: OutgoingServer | None
    via: Via
    rule: str | None
    trace: tuple[RuleTrace, ...] = field(default=())
    reason: str = ""

    @property
    def server_name(self) -> str | None:
        return self.server.metadata.name if self.server is not None else None

    def to_json(self) -> dict[str, Any]:
        """The decision as kept with the outbox row and shown by ``outbox show`` (O13):
        the rule that matched, every rule tried before it with its verdict, the server
        chosen and its alternate host (used while the main host is unreachable)."""
        spec = self.server.spec if self.server is not None else None
        alternates = ([f"{spec.alternate_host}:{spec.alternate_port or spec.port}"]
                      if spec is not None and spec.alternate_host else [])
        return {
            "via": str(self.via), "rule": self.rule, "server": self.server_name,
            "reason": self.reason, "alternates": alternates,
            "rules": [{"rule": t.rule, "order": t.order, "server": t.server,
                       "verdict": str(t.verdict), "note": t.note,
                       "failed": [c.why for c in t.conditions if not c.matched]}
                      for t in self.trace],
        }

    def explain(self) -> str:
        """Plain-text explanation, one line per rule and condition."""
        ctx = ", ".join(f"{k}={v}" for k, v in sorted(self.context.items())) or "(empty)"
        lines = [f"module {self.module}, context: {ctx}"]
        if not self.trace:
            lines.append(f"  no enabled rules for module {self.module}")
        for t in self.trace:
            head = f"  rule {t.rule} (order {t.order}, match {t.match}) -> {t.server}: {t.verdict}"
            lines.append(head + (f" ({t.note})" if t.note else ""))
            for c in t.conditions:
                mark = "ok  " if c.matched else "FAIL"
                lines.append(f"    [{mark}] {c.why}")
        lines.append(f"=> {self.reason}")
        return "\n".join(lines)


def route(module: str, context: Mapping[str, str], rules: Iterable[OutgoingEmailRule],
          servers: Iterable[OutgoingServer]) -> RouteDecision:
    """Pick the server for a notification of ``module`` with ``context`` from one
    namespace's ``rules`` and ``servers``."""
    by_name = {s.metadata.name: s for s in servers}
    context = dict(context)
    candidates = sorted((r for r in rules if r.spec.module.casefold() == module.casefold()),
                        key=lambda r: (r.spec.order, r.metadata.name))
    trace: list[RuleTrace] = []
    for rule in candidates:
        spec, name = rule.spec, rule.metadata.name
        results = tuple(evaluate(c, context) for c in spec.conditions) if spec.enabled else ()
        server = by_name.get(spec.server)
        verdict, note = _verdict(spec.enabled, _combine(MatchMode(spec.match), results), server)
        trace.append(RuleTrace(name, spec.order, str(spec.match), spec.server, verdict, results,
                               note))
        if verdict == RuleVerdict.MATCHED:
            return RouteDecision(module, context, server, Via.RULE, name, tuple(trace),
                                 f"server {spec.server} (rule {name})")

    primaries = enabled_primaries(by_name.values())
    if not primaries:
        return RouteDecision(module, context, None, Via.NONE, None, tuple(trace),
                             "no rule matched and the namespace has no enabled primary server")
    why = "no rule matched" if trace else f"no enabled rules for module {module}"
    reason = f"server {primaries[0].metadata.name} (primary; {why})"
    if len(primaries) > 1:
        # validate forbids this; a hand-edited store may not, so say which one won.
        others = ", ".join(s.metadata.name for s in primaries[1:])
        reason += f"; several enabled primaries, also {others}: picked by name"
    return RouteDecision(module, context, primaries[0], Via.PRIMARY, None, tuple(trace), reason)


def enabled_primaries(servers: Iterable[OutgoingServer]) -> list[OutgoingServer]:
    """The namespace's enabled primaries by name: validate allows one, the first wins."""
    return sorted((s for s in servers if s.spec.primary and s.spec.enabled),
                  key=lambda s: s.metadata.name)


def _combine(mode: MatchMode, results: tuple[ConditionResult, ...]) -> bool:
    if not results:
        return True  # a rule without conditions catches everything of its module
    if mode == MatchMode.ANY:
        return any(r.matched for r in results)
    return all(r.matched for r in results)


def _verdict(rule_enabled: bool, matched: bool,
             server: OutgoingServer | None) -> tuple[RuleVerdict, str]:
    if not rule_enabled:
        return RuleVerdict.RULE_DISABLED, ""
    if not matched:
        return RuleVerdict.NOT_MATCHED, ""
    if server is None:
        return RuleVerdict.SERVER_MISSING, "no such OutgoingServer; trying the next rule"
    if not server.spec.enabled:
        return RuleVerdict.SERVER_DISABLED, "trying the next rule"
    return RuleVerdict.MATCHED, ""


def _lookup(context: Mapping[str, str], name: str) -> str | None:
    if name in context:
        return context[name]
    # The desk's field names are not always spelled like the rule's (Department
    # vs department); accept a case-insensitive match when it is unambiguous.
    hits = [v for k, v in context.items() if k.casefold() == name.casefold()]
    return hits[0] if len(hits) == 1 else None


@lru_cache(maxsize=512)
def _regex(pattern: str, case_sensitive: bool) -> re.Pattern[str]:
    return re.compile(pattern, 0 if case_sensitive else re.IGNORECASE)


def evaluate(condition: Condition, context: Mapping[str, str]) -> ConditionResult:
    """Test one condition against the context and say why it held or not."""
    op = Operator(condition.operator)
    multi = op in (Operator.IN, Operator.NOT_IN)
    expected: str | tuple[str, ...] = (tuple(condition.values or ()) if multi
                                       else (condition.value or ""))
    actual = _lookup(context, condition.field)
    shown = f"{condition.field} {op} " + (f"[{', '.join(map(repr, expected))}]" if multi
                                           else repr(expected))
    if actual is None:
        return ConditionResult(condition.field, str(op), expected, None, op in _NEGATIVE,
                               f"{shown}: {condition.field} is not set")

    def norm(text: str) -> str:
        return text if condition.case_sensitive else text.casefold()

    a = norm(actual)
    if op == Operator.REGEX:
        matched = _regex(str(expected), condition.case_sensitive).search(actual) is not None
    elif multi:
        hit = a in {norm(v) for v in expected}
        matched = hit if op == Operator.IN else not hit
    else:
        e = norm(str(expected))
        matched = {
            Operator.EQUALS: a == e,
            Operator.NOT_EQUALS: a != e,
            Operator.CONTAINS: e in a,
            Operator.NOT_CONTAINS: e not in a,
            Operator.STARTS_WITH: a.startswith(e),
            Operator.ENDS_WITH: a.endswith(e),
        }[op]
    case = " (case-sensitive)" if condition.case_sensitive else ""
    verdict = "holds" if matched else "does not hold"
    return ConditionResult(condition.field, str(op), expected, actual, matched,
                           f"{shown}{case}: {verdict} for {condition.field}={actual!r}")
