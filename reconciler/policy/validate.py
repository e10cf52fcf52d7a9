"""The validation pipeline: files -> models -> derived values -> cross-checks ->
policies -> DesiredState. Every stage reports into one Diagnostics so a run
shows all problems at once (SPEC C4)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from pydantic import ValidationError

from reconciler.config.checks import check_semantics
from reconciler.config.derive import defaulted_paths, derive_all
from reconciler.config.desired import CanonicalResource, DesiredState, ResourceKey
from reconciler.config.diagnostics import (
    ROOT_CAUSES,
    Diagnostic,
    Diagnostics,
    Severity,
    did_you_mean,
)
from reconciler.config.errors import diagnostics_from, show_value
from reconciler.config.gcpause import gc_paused
from reconciler.config.loaded import Derivation, LoadedResource, Unloaded
from reconciler.config.loader import Document, diagnostic_at, load_tree, locate
from reconciler.config.models import KINDS
from reconciler.config.models.base import API_VERSION
from reconciler.config.references import check_references
from reconciler.config.secret_checks import check_secret_places
from reconciler.config.versions import CONVERSIONS, upgrade
from reconciler.policy import engine as policy_engine
from reconciler.policy.models import POLICY_KINDS


@dataclass
class ValidationResult:
    diagnostics: Diagnostics
    resources: list[LoadedResource] = field(default_factory=list)
    _desired: DesiredState | None = field(default=None, init=False, repr=False)

    @property
    def ok(self) -> bool:
        return not self.diagnostics.has_errors

    @property
    def desired(self) -> DesiredState | None:
        """The canonical desired state; None when there were errors.

        Built on first use: `validate` never needs it, and for a large repo it
        is the last ~1 KB a resource on top of everything else still held
        (~180 MB of the peak for 180,000 resources).
        """
        if self._desired is None and self.ok:
            with gc_paused():
                self._desired = DesiredState.of(canonical(r) for r in self.resources)
        return self._desired

    def derivations(self) -> Mapping[ResourceKey, set[str]]:
        """Dotted paths of values the YAML did not write, derived or the model's defaults,
        per resource: plans mark them, and show them only when they change."""
        return _NotWritten({ResourceKey(*r.key): r for r in self.resources})

    @property
    def count(self) -> int:
        return len(self.resources)

    def derived_listing(self) -> list[tuple[str, str, list[Derivation]]]:
        """(resource, file, derived values) per resource, for `validate --show-derived`."""
        return [(r.model.display, r.file, r.derivations) for r in self.resources]


class _NotWritten(Mapping[ResourceKey, set[str]]):
    """Worked out per resource when asked (~0.1 ms each): a plan asks only for the
    resources that changed, so its cost grows with the change, not the repo (X7)."""

    def __init__(self, resources: dict[ResourceKey, LoadedResource]) -> None:
        self._resources = resources

    def __getitem__(self, key: ResourceKey) -> set[str]:
        res = self._resources[key]
        return {d.dotted for d in res.derivations} | set(
            defaulted_paths(res.model.spec, ("spec",)))

    def __iter__(self) -> Iterator[ResourceKey]:
        return iter(self._resources)

    def __len__(self) -> int:
        return len(self._resources)


def _envelope_problem(doc: Document) -> Diagnostic | None:
    """Why ``doc`` is not a resource or policy of a known kind and apiVersion, if it is not."""
    data = doc.data
    if not isinstance(data, dict):
        line, col = doc.mark  # a bare scalar has no marks of its own
        return Diagnostic(code="not-a-resource", file=doc.file, line=line, col=col,
                          message="a resource document must be a mapping with apiVersion, "
                          "kind, metadata and spec")
    kind = data.get("kind")
    if kind is None:
        return diagnostic_at(doc, (), "kind-missing", "`kind` is missing",
                             hint="e.g. kind: OutgoingServer")
    if not isinstance(kind, str):
        return _not_text(doc, "kind", kind, "kind: OutgoingServer")
    if kind not in KINDS and kind not in POLICY_KINDS:
        return diagnostic_at(doc, ("kind",), "unknown-kind", f"unknown kind {kind!r}",
                             hint=did_you_mean(kind, [*KINDS, *POLICY_KINDS],
                                               "known kinds: " + ", ".join(sorted(KINDS))))
    version = data.get("apiVersion")
    if version is None:
        return diagnostic_at(doc, (), "api-version", "`apiVersion` is missing",
                             hint=f"e.g. apiVersion: {API_VERSION}")
    if not isinstance(version, str):  # a mapping or list would not even hash below
        return _not_text(doc, "apiVersion", version, f"apiVersion: {API_VERSION}")
    if version != API_VERSION and version not in CONVERSIONS:
        return diagnostic_at(doc, ("apiVersion",), "api-version",
                             f"unsupported apiVersion {version!r}",
                             hint=f"use {API_VERSION} (older versions still read: "
                             f"{', '.join(CONVERSIONS)})")
    return None


def _not_text(doc: Document, field: str, value: object, example: str) -> Diagnostic:
    code = "api-version" if field == "apiVersion" else "unknown-kind"
    return diagnostic_at(doc, (field,), code, f"`{field}` must be text, got {show_value(value)}",
                         hint=f"e.g. {example}")


def parse_documents(documents: Sequence[Document],
                    diags: Diagnostics) -> tuple[list[LoadedResource], list[Document]]:
    """Validate each document against its kind's model; policy documents are set aside."""
    resources: list[LoadedResource] = []
    policy_docs: list[Document] = []
    for doc in documents:
        problem = _envelope_problem(doc)
        if problem is not None:
            diags.add(problem)
            continue
        notes = upgrade(doc.data)
        if notes:
            diags.add(diagnostic_at(doc, ("apiVersion",), "converted", "; ".join(notes),
                                    hint="run `reconcile convert` to write this to the file",
                                    severity=Severity.NOTICE))
        kind = doc.data["kind"]
        if kind in POLICY_KINDS:
            policy_docs.append(doc)
            continue
        model = KINDS[kind]
        try:
            resources.append(LoadedResource(model.model_validate(doc.data), doc))
        except ValidationError as exc:
            diags.extend(diagnostics_from(exc, doc, model))
    return resources, policy_docs


def _duplicates(resources: list[LoadedResource], diags: Diagnostics) -> list[LoadedResource]:
    first: dict[tuple[str, str, str], LoadedResource] = {}
    unique = []
    for res in resources:
        if res.key in first:
            seen = first[res.key]
            diags.add(res.diagnostic(
                "duplicate-resource",
                f"{res.model.kind} {res.model.metadata.name!r} is defined twice in namespace "
                f"{res.model.metadata.namespace!r} (first at {seen.file}:"
                f"{locate(seen.document.data, ('metadata', 'name'))[0]})",
                ("metadata", "name"), hint="rename one of them or delete the copy"))
            continue
        first[res.key] = res
        unique.append(res)
    return unique


def canonical(res: LoadedResource) -> CanonicalResource:
    model = res.model
    spec = model.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return CanonicalResource.build(ResourceKey(*model.key), model.api_version, spec,
                                   model.metadata.labels)


MAX_TEXT = 1 << 20  # of a file that failed to load, searched for the names it may define


def _unloaded(documents: Sequence[Document], resources: Sequence[LoadedResource],
              diags: Diagnostics, root: Path | None) -> Unloaded:
    """Files that did not load and documents whose model failed: the root causes that
    checks across resources must not pile knock-on errors onto."""
    texts = []
    failed = {d.file for d in diags.items if d.code in ROOT_CAUSES and d.file}
    for name in sorted(failed) if root is not None else ():
        path = root if root.is_file() else root / name
        with contextlib.suppress(OSError):
            texts.append(path.read_bytes()[:MAX_TEXT].decode("utf-8", "replace"))
    loaded = {id(r.document) for r in resources}
    keys = set()
    for doc in documents:
        data = doc.data
        kind = data.get("kind") if isinstance(data, dict) else None
        if id(doc) in loaded or not isinstance(kind, str) or kind in POLICY_KINDS:
            continue
        meta = data.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        namespace, name = meta.get("namespace", "default"), meta.get("name", "")
        keys.add((kind, namespace if isinstance(namespace, str) else "",
                  name if isinstance(name, str) else ""))
    return Unloaded(frozenset(keys), tuple(texts))


@gc_paused()
def validate_documents(documents: Sequence[Document], diags: Diagnostics, *,
                       today: date | None = None, root: Path | None = None) -> ValidationResult:
    resources, policy_docs = parse_documents(documents, diags)
    unloaded = _unloaded(documents, resources, diags, root)
    resources = _duplicates(resources, diags)
    derive_all(resources)
    diags.extend(check_references(resources, unloaded))
    diags.extend(check_semantics(resources, unloaded))
    diags.extend(check_secret_places(resources))
    policies = policy_engine.parse_policies(
        [*policy_engine.shipped_documents(diags), *policy_docs], diags)
    diags.extend(policy_engine.evaluate(policies, resources, today=today or date.today()))
    return ValidationResult(diags, resources)


@gc_paused()
def validate_path(root: Path, *, today: date | None = None) -> ValidationResult:
    """Load and validate a config repo (a folder, or one file)."""
    diags = Diagnostics()
    documents = load_tree(root, diags)
    if not documents and not diags.has_errors:
        diags.add(Diagnostic(code="no-resources", file=str(root),
                             message="no YAML resources found",
                             hint="config files end in .yaml or .yml",
                             severity=Severity.WARNING))
    return validate_documents(documents, diags, today=today, root=root)
