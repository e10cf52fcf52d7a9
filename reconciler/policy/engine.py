"""The policy engine (SPEC C8): Policy documents -> findings on resources.

Pipeline use::

    documents = shipped_documents(diagnostics) + user_documents
    policy_set = parse_policies(documents, diagnostics)
    diagnostics.extend(evaluate(policy_set, resources, today=date.today()))

Everything a policy needs is compiled in ``parse_policies``; ``evaluate`` only
filters by kind, dumps each matched resource to JSON once and runs closures
(see :mod:`reconciler.policy.cel` for why this is fast).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from importlib import resources as importlib_resources
from typing import Any

from pydantic import ValidationError

from reconciler.config.diagnostics import Diagnostic, Diagnostics, Severity
from reconciler.config.loaded import LoadedResource
from reconciler.config.loader import YAML_SUFFIXES, Document, diagnostic_at, load_text, value_at
from reconciler.config.models import KINDS
from reconciler.config.models.base import Metadata
from reconciler.config.positions import YamlPath
from reconciler.policy.cel import Program, compile_expression
from reconciler.policy.cel_ops import CelError, type_name
from reconciler.policy.errors import validation_diagnostics
from reconciler.policy.models import (
    POLICY_KINDS,
    VARIABLES,
    Policy,
    PolicyException,
    PolicySeverity,
    Selector,
)
from reconciler.policy.waivers import CompiledException, Waivers

# Shipped policies are shown with this prefix so they never collide with a
# user's own ``policies/`` folder in messages.
SHIPPED_PREFIX = "<shipped>/"
DEFAULTS_PACKAGE = "reconciler.policy"
DEFAULTS_FOLDER = "defaults"

# A broken expression would otherwise report the same error for every resource.
MAX_EVAL_ERRORS_PER_POLICY = 5

_SEVERITY = {PolicySeverity.DENY: Severity.ERROR, PolicySeverity.WARN: Severity.WARNING}


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    model: Policy
    document: Document
    condition: Program
    when: Program | None
    paths: tuple[YamlPath, ...]
    severity: Severity
    namespace: str | None  # set: applies only to resources of that namespace

    @property
    def name(self) -> str:
        return self.model.metadata.name

    @property
    def shipped(self) -> bool:
        return self.document.file.startswith(SHIPPED_PREFIX)

    @property
    def filtered(self) -> bool:
        """Whether :meth:`selects` can ever be false (saves the call per resource)."""
        spec = self.model.spec
        return self.namespace is not None or spec.match is not None or spec.exclude is not None

    def selects(self, metadata: Metadata) -> bool:
        if self.namespace is not None and metadata.namespace != self.namespace:
            return False
        spec = self.model.spec
        if spec.match is not None and not _selected(spec.match, metadata):
            return False
        return spec.exclude is None or not _selected(spec.exclude, metadata)


@dataclass(slots=True)
class PolicySet:
    """The policies (by name, enabled or not) and exceptions of one run."""

    policies: dict[str, CompiledPolicy] = field(default_factory=dict)
    exceptions: list[CompiledException] = field(default_factory=list)
    by_kind: dict[str, list[CompiledPolicy]] = field(default_factory=dict)

    @classmethod
    def of(cls, policies: Iterable[CompiledPolicy],
           exceptions: Iterable[CompiledException] = ()) -> PolicySet:
        result = cls(exceptions=list(exceptions))
        for policy in policies:
            result.policies[policy.name] = policy
            if policy.model.spec.enabled:
                for kind in dict.fromkeys(policy.model.spec.kinds):
                    result.by_kind.setdefault(kind, []).append(policy)
        return result


def _selected(selector: Selector, metadata: Metadata) -> bool:
    if selector.namespaces and metadata.namespace not in selector.namespaces:
        return False
    labels = metadata.labels
    return all(labels.get(k) == v for k, v in selector.labels.items())


# -- loading -------------------------------------------------------------------
def shipped_documents(diagnostics: Diagnostics) -> list[Document]:
    """The default policies shipped in the package (the repo's top-level ``policies/``)."""
    folder = importlib_resources.files(DEFAULTS_PACKAGE) / DEFAULTS_FOLDER
    try:
        entries = sorted((e for e in folder.iterdir()
                          if e.name.endswith(YAML_SUFFIXES) and e.is_file()), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        diagnostics.add(Diagnostic(
            code="policy-defaults-missing",
            message="the shipped default policies are missing from this installation",
            hint="reinstall reconciler; the wheel must contain reconciler/policy/defaults",
            severity=Severity.WARNING))
        return []
    return [document for entry in entries
            for document in load_text(entry.read_text(encoding="utf-8"),
                                      SHIPPED_PREFIX + entry.name, diagnostics)]


def is_policy_document(document: Document) -> bool:
    """True for Policy/PolicyException documents, which the resource pipeline skips."""
    data = document.data
    return isinstance(data, dict) and data.get("kind") in POLICY_KINDS


def parse_policies(documents: Sequence[Document], diagnostics: Diagnostics) -> PolicySet:
    """Validate and compile every Policy/PolicyException among ``documents``.

    Other documents are ignored, so the pipeline may pass all of them. A user
    policy named like a shipped one replaces it (``enabled: false`` switches it
    off). Invalid policies are reported and left out.
    """
    shipped: dict[str, CompiledPolicy] = {}
    own: dict[str, CompiledPolicy] = {}
    exceptions: dict[tuple[str, str], CompiledException] = {}
    for document in documents:
        if not is_policy_document(document):
            continue
        cls = POLICY_KINDS[document.data["kind"]]
        try:
            model = cls.model_validate(document.data)
        except ValidationError as exc:
            diagnostics.extend(validation_diagnostics(document, exc, cls))
            continue
        if isinstance(model, Policy):
            compiled = _compile_policy(model, document, diagnostics)
            if compiled is not None:
                table = shipped if compiled.shipped else own
                _add_unique(table, compiled.name, compiled, diagnostics, "policy")
        else:
            assert isinstance(model, PolicyException)
            exception = CompiledException.of(model, document)
            _add_unique(exceptions, model.key[1:], exception, diagnostics, "policy exception")
    return PolicySet.of({**shipped, **own}.values(), exceptions.values())


def _add_unique(table: dict[Any, Any], key: Any, item: Any, diagnostics: Diagnostics,
                what: str) -> None:
    first = table.get(key)
    if first is None:
        table[key] = item
        return
    line, _ = first.document.mark
    diagnostics.add(diagnostic_at(
        item.document, ("metadata", "name"), "duplicate-name",
        f"{what} {item.name!r} is defined twice (first in {first.document.file}:{line})",
        hint="names must be unique; rename or remove one of them"))


def _compile_policy(model: Policy, document: Document,
                    diagnostics: Diagnostics) -> CompiledPolicy | None:
    spec = model.spec
    # The model validator already compiled both (cached), so these are cache hits.
    condition = compile_expression(spec.condition, VARIABLES)
    when = compile_expression(spec.when, VARIABLES) if spec.when is not None else None
    problems = _unknown_fields(spec.kinds, condition, "condition")
    if when is not None:
        problems += _unknown_fields(spec.kinds, when, "when")
    for field_name, message in problems:
        diagnostics.add(diagnostic_at(
            document, ("spec", field_name), "policy-invalid", message,
            hint="policy expressions use the camelCase names of the YAML"))
    if problems:
        return None
    raw_paths = [spec.path] if isinstance(spec.path, str) else spec.path
    # only a namespace written on the policy confines it, not the default one
    written = value_at(document.data, ("metadata", "namespace"), _ABSENT) is not _ABSENT
    return CompiledPolicy(model=model, document=document, condition=condition, when=when,
                          paths=tuple(_split_path(p) for p in raw_paths) or (("spec",),),
                          severity=_SEVERITY[PolicySeverity(spec.severity)],
                          namespace=model.metadata.namespace if written else None)


def _split_path(dotted: str) -> YamlPath:
    return tuple(int(p) if p.isdigit() else p for p in dotted.split("."))


def _field_names(kinds: Sequence[str], root: str) -> set[str]:
    if root == "metadata":
        return {f.alias or n for n, f in Metadata.model_fields.items()}
    names: set[str] = set()
    for kind in kinds:
        spec_model = KINDS[kind].model_fields["spec"].annotation
        names |= {f.alias or n for n, f in getattr(spec_model, "model_fields", {}).items()}
    return names


def _unknown_fields(kinds: Sequence[str], program: Program, where: str) -> list[tuple[str, str]]:
    problems = []
    for root, name in sorted(program.fields):
        if root not in ("spec", "metadata"):
            continue
        known = _field_names(kinds, root)
        if name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1)
        suggestion = f"; did you mean {root}.{close[0]}?" if close else ""
        problems.append((where, f"{root}.{name} is not a field of {' or '.join(kinds)}"
                                f"{suggestion}"))
    return problems


# -- evaluation ----------------------------------------------------------------
def evaluate(policy_set: PolicySet, resources: Sequence[LoadedResource], *,
             today: date) -> list[Diagnostic]:
    """Findings of every enabled policy on ``resources``, minus waived ones, plus
    problems of the exceptions themselves (expired, unknown policy or resource)."""
    findings: list[Diagnostic] = []
    waivers = Waivers.of(policy_set.exceptions, policy_set.policies, resources, today, findings)
    errors: dict[str, int] = {}
    # Hot loop: 10,000 resources x every policy of their kind; keep it lean.
    by_kind = {kind: [(p, p.filtered) for p in policies]
               for kind, policies in policy_set.by_kind.items()}
    for resource in resources:
        model = resource.model
        policies = by_kind.get(model.kind)
        if not policies:
            continue
        activation: dict[str, Any] | None = None
        for policy, filtered in policies:
            if filtered and not policy.selects(model.metadata):
                continue
            if activation is None:
                # Once per resource, and only for resources some policy looks at.
                activation = model.model_dump(mode="json", by_alias=True, exclude_none=False)
            outcome = _check(policy, activation)
            if outcome is True:
                continue
            # an unknown outcome also counts as use: do not call the waiver unneeded
            waived = bool(waivers) and waivers.use(policy.name, resource.key)
            if outcome is not False:
                _eval_error(policy, resource, outcome, errors, findings)
                continue
            if waived:
                continue
            spec = policy.model.spec
            findings.append(resource.diagnostic(
                f"policy:{policy.name}", spec.message,
                _finding_path(policy.paths, resource.document.data), hint=spec.hint or "",
                severity=policy.severity))
    _summarise_errors(policy_set, errors, findings)
    findings.extend(waivers.unused())
    return findings


def _check(policy: CompiledPolicy, activation: Mapping[str, Any]) -> bool | str:
    """True: complies or not applicable; False: violation; str: evaluation error."""
    part = "when"
    try:
        if policy.when is not None:
            applies = policy.when.run(activation)
            if applies is not True:
                if applies is False:
                    return True
                return f"`when` must be true or false, but it gave {type_name(applies)}"
        part = "condition"
        result = policy.condition.run(activation)
    except CelError as exc:
        return f"{exc} (in `{part}`)"
    except RecursionError:
        return f"expression nested too deeply (in `{part}`)"
    except Exception as exc:  # a bug in a helper must not abort the whole validation
        return f"internal error {type(exc).__name__}: {exc} (in `{part}`)"
    if result is True or result is False:
        return result
    return f"`condition` must be true or false, but it gave {type_name(result)}"


def _eval_error(policy: CompiledPolicy, resource: LoadedResource, problem: str,
                errors: dict[str, int], findings: list[Diagnostic]) -> None:
    count = errors[policy.name] = errors.get(policy.name, 0) + 1
    if count > MAX_EVAL_ERRORS_PER_POLICY:
        return
    findings.append(resource.diagnostic(
        "policy-error",
        f"policy {policy.name} could not check {resource.model.display}: {problem}",
        hint="guard optional keys with has(...), e.g. has(metadata.labels.env), "
        "and unset fields with != null"))


def _summarise_errors(policy_set: PolicySet, errors: Mapping[str, int],
                      findings: list[Diagnostic]) -> None:
    for name, count in errors.items():
        if count <= MAX_EVAL_ERRORS_PER_POLICY:
            continue
        more = count - MAX_EVAL_ERRORS_PER_POLICY
        findings.append(diagnostic_at(
            policy_set.policies[name].document, ("spec", "condition"), "policy-error",
            f"policy {name} failed on {count} resources ({more} not listed)",
            hint="fix the expression; the first failures are reported at their resources"))


def _finding_path(paths: Sequence[YamlPath], data: Any) -> YamlPath:
    """The first candidate path written in the YAML, else the first one (positioned
    at its nearest existing parent by ``locate``)."""
    return next((p for p in paths if value_at(data, p, _ABSENT) is not _ABSENT), paths[0])


_ABSENT = object()
