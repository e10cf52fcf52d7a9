"""A validated resource together with where it came from and what was derived."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.config.diagnostics import Diagnostic, Severity
from reconciler.config.loader import Document, diagnostic_at
from reconciler.config.models.base import Resource


@dataclass(frozen=True, slots=True)
class Derivation:
    """A value the tool filled in, with the reason shown by `validate --show-derived`
    and marked in plans. ``path`` is camelCase from the resource root, e.g.
    ``("spec", "port")``."""

    path: tuple[str, ...]
    value: Any
    reason: str

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


@dataclass(slots=True)
class LoadedResource:
    model: Resource
    document: Document
    derivations: list[Derivation] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str]:
        return self.model.key

    @property
    def file(self) -> str:
        return self.document.file

    def diagnostic(self, code: str, message: str, path: Sequence[str | int] = (), *,
                   hint: str = "", severity: Severity = Severity.ERROR,
                   key: bool = False) -> Diagnostic:
        """A diagnostic positioned at ``path`` of this resource's YAML."""
        return diagnostic_at(self.document, path, code, message, hint=hint, severity=severity,
                             key=key)
