"""PolicyExceptions: which (policy, resource) findings they waive, and their own problems.

An exception names a policy and resources; it waives that policy's findings on
those resources until ``expires``. Its own problems are findings too: an
unknown policy or resource, a resource the policy never checks, an expired or
soon expiring date, and (after a run) a waiver no resource needed any more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

from reconciler.config.desired import ResourceKey
from reconciler.config.diagnostics import Diagnostic, Severity, did_you_mean
from reconciler.config.loaded import LoadedResource
from reconciler.config.loader import Document, diagnostic_at
from reconciler.config.positions import YamlPath
from reconciler.policy.models import PolicyException

if TYPE_CHECKING:
    from reconciler.policy.engine import CompiledPolicy

# An exception this close to its expiry date gets a notice so it is renewed or fixed in time.
EXPIRY_NOTICE_DAYS = 14


@dataclass(frozen=True, slots=True)
class CompiledException:
    model: PolicyException
    document: Document
    targets: tuple[ResourceKey, ...]

    @classmethod
    def of(cls, model: PolicyException, document: Document) -> CompiledException:
        namespace = model.metadata.namespace
        return cls(model, document,
                   tuple(ResourceKey.parse(t, namespace) for t in model.spec.resources))

    @property
    def name(self) -> str:
        return self.model.metadata.name

    def at(self, path: YamlPath, code: str, message: str, *, hint: str = "",
           severity: Severity = Severity.ERROR) -> Diagnostic:
        return diagnostic_at(self.document, ("spec", *path), code, message, hint=hint,
                             severity=severity)


@dataclass(slots=True)
class Waivers:
    """The active waivers of one run: (policy, resource) -> (exception, index in
    ``spec.resources``), and which of them the run needed."""

    table: dict[tuple[str, ResourceKey], tuple[CompiledException, int]]
    used: set[tuple[str, ResourceKey]] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.table)

    @classmethod
    def of(cls, exceptions: Sequence[CompiledException],
           policies: Mapping[str, CompiledPolicy], resources: Iterable[LoadedResource],
           today: date, findings: list[Diagnostic]) -> Waivers:
        """The waivers in force ``today``; the exceptions' own problems go to ``findings``."""
        table: dict[tuple[str, ResourceKey], tuple[CompiledException, int]] = {}
        if not exceptions:
            return cls(table)
        existing = {ResourceKey(*r.key) for r in resources}
        for exception in exceptions:
            policy = policies.get(exception.model.spec.policy)
            if policy is None:
                findings.append(_unknown_policy(exception, policies))
            # A waiver for a switched-off policy is harmless; keep it quiet.
            valid = policy is not None and policy.model.spec.enabled
            valid = _check_expiry(exception, today, findings) and valid
            for i, target in enumerate(exception.targets):
                problem = _target_problem(exception, i, target, existing, policy)
                if problem is not None:
                    findings.append(problem)
                elif valid:
                    table.setdefault((exception.model.spec.policy, target), (exception, i))
        return cls(table)

    def use(self, policy: str, key: tuple[str, str, str]) -> bool:
        """Whether a finding of ``policy`` on ``key`` is waived (and mark the waiver used)."""
        waiver = (policy, ResourceKey(*key))
        if waiver not in self.table:
            return False
        self.used.add(waiver)
        return True

    def unused(self) -> list[Diagnostic]:
        return [exception.at(("resources", i), "policy-exception-unused",
                             f"{target} passes policy {policy}, so this exception is no "
                             "longer needed", severity=Severity.NOTICE)
                for (policy, target), (exception, i) in self.table.items()
                if (policy, target) not in self.used]


def _check_expiry(exception: CompiledException, today: date,
                  findings: list[Diagnostic]) -> bool:
    """False once expired; a notice when the date is near."""
    expires = exception.model.spec.expires
    if expires is None:
        return True
    if expires < today:
        findings.append(exception.at(
            ("expires",), "policy-exception-expired",
            f"policy exception {exception.name} expired on {expires.isoformat()}; "
            "it no longer waives anything",
            hint="fix the resources it names, or agree a new date and update `expires`"))
        return False
    if (expires - today).days <= EXPIRY_NOTICE_DAYS:
        findings.append(exception.at(
            ("expires",), "policy-exception-expiring",
            f"policy exception {exception.name} expires on {expires.isoformat()}",
            severity=Severity.NOTICE))
    return True


def _target_problem(exception: CompiledException, i: int, target: ResourceKey,
                    existing: set[ResourceKey], policy: CompiledPolicy | None) -> Diagnostic | None:
    if target not in existing:
        return exception.at(
            ("resources", i), "policy-exception-target",
            f"policy exception {exception.name} names {target}, which does not exist",
            hint="write KIND/NAME for a resource in the exception's namespace, "
            "or KIND/NAMESPACE/NAME")
    if policy is not None and target.kind not in policy.model.spec.kinds:
        return exception.at(
            ("resources", i), "policy-exception-target",
            f"policy {policy.name} does not check {target.kind} resources, "
            f"so {target} needs no exception")
    return None


def _unknown_policy(exception: CompiledException,
                    policies: Mapping[str, CompiledPolicy]) -> Diagnostic:
    name = exception.model.spec.policy
    return exception.at(
        ("policy",), "policy-exception-policy",
        f"policy exception {exception.name} names policy {name!r}, which does not exist",
        hint=did_you_mean(name, policies, "use the metadata.name of a Policy"))
