"""A validated resource together with where it came from and what was derived."""

from __future__ import annotations

import re
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


@dataclass(frozen=True, slots=True)
class Unloaded:
    """What did not load: documents whose model failed, by key, and the text of files that
    could not be read as YAML. Checks across resources skip what these may hold: "no
    enabled primary" when the primary's file has a syntax error is a knock-on error that
    only buries the real one. A text "may hold" a resource when it names it (as a word)
    and its namespace (or none, for ``default``): a guess, but one that only ever hides
    an error behind another one the user must fix first."""

    keys: frozenset[tuple[str, str, str]] = frozenset()  # (kind, namespace, name or "")
    texts: tuple[str, ...] = ()

    def may_hold(self, kind: str, namespace: str, name: str = "") -> bool:
        """Whether ``name`` (a primary, when empty) of ``kind`` may be among what failed."""
        if any(k[:2] == (kind, namespace) and (not name or k[2] in (name, ""))
               for k in self.keys):
            return True
        word = re.compile(rf"\b{re.escape(name or 'primary')}\b")
        return any(word.search(t) and _in_namespace(t, namespace) for t in self.texts)


def _in_namespace(text: str, namespace: str) -> bool:
    if re.search(rf"namespace:\s*[\"']?{re.escape(namespace)}\b", text):
        return True
    return namespace == "default" and "namespace" not in text


NOTHING_UNLOADED = Unloaded()
