"""Validating a commit's config folder, re-reading only what the commit changed (SPEC X5).

The syncer validates with the plan cache of `reconcile validate`
(:mod:`reconciler.policy.incremental`), kept in its cache folder next to the
checkout: the checkout rewrites only the files a commit changed, so their
stat tells the cache which files to read again, and the namespaces and
policies those files touch are checked again; everything else is reused. The
cache promises the diagnostics and desired state of a cold validation, so the
plan, the policies and every refusal are those of `reconcile apply DIR`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from reconciler.config.desired import CanonicalResource, DesiredState, ResourceKey
from reconciler.config.diagnostics import Diagnostics
from reconciler.config.loader import load_text
from reconciler.config.models.sync_policy import SyncPolicy
from reconciler.policy.incremental import (
    CachedValidation,
    Row,
    resources_of,
    validate_incremental,
)
from reconciler.policy.validate import ValidationResult, parse_documents

KIND = "SyncPolicy"


class CommitChecker:
    """Validates commits with the plan cache in ``cache``, and keeps the desired state's
    resources between syncs: a namespace whose canonical resources did not change is not
    decoded again (at 10,000 resources that decoding is most of a warm validation)."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self._decoded: dict[str, list[CanonicalResource]] = {}  # by their cached JSON

    def validate(self, tree: Path) -> ValidationResult:
        """The commit's validation; typed as the cold result, which the cached one stands
        for wherever a plan reads it (``diagnostics``, ``desired``, ``derivations()``)."""
        result = validate_incremental(tree, self.cache)
        if isinstance(result, CachedValidation) and result.ok:
            decoded = {text: self._decoded.get(text) or resources_of(text) for text in result.specs}
            self._decoded = decoded  # only this commit's: the memo never outgrows the repo
            result = _Warm(result, DesiredState.of(r for rs in decoded.values() for r in rs))
        return cast(ValidationResult, result)


@dataclass(frozen=True)
class _Warm:
    """A cached validation whose desired state was assembled from kept resources."""

    cached: CachedValidation
    desired: DesiredState

    @property
    def ok(self) -> bool:
        return self.cached.ok

    @property
    def diagnostics(self) -> Diagnostics:
        return self.cached.diagnostics

    @property
    def rows(self) -> list[Row]:
        return self.cached.rows

    def derivations(self) -> Mapping[ResourceKey, set[str]]:
        return self.cached.derivations()


def sync_policies(result: ValidationResult, tree: Path) -> list[SyncPolicy]:
    """The commit's SyncPolicy models. A cached validation keeps no models, so the few
    files that hold a SyncPolicy are parsed again (only those)."""
    if not isinstance(result, _Warm | CachedValidation):
        return [r.model for r in result.resources if isinstance(r.model, SyncPolicy)]
    files = dict.fromkeys(row.file for row in result.rows if row.key.kind == KIND)
    found: list[SyncPolicy] = []
    for name in files:
        text = (tree / name).read_text(encoding="utf-8")
        resources, _ = parse_documents(load_text(text, name, Diagnostics()), Diagnostics())
        found.extend(r.model for r in resources if isinstance(r.model, SyncPolicy))
    return found
