"""Diagnostics: every problem the tool reports, with where it is and how to fix it.

A diagnostic is data; rendering (text, JSON, GitHub annotations) lives in
``reconciler.cli.render`` so that library code never prints.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from enum import StrEnum

# Codes meaning a file (or the rest of it) was not read: whatever it held is unknown, so
# checks across resources cannot tell a real gap from a knock-on of this.
ROOT_CAUSES = frozenset({"yaml-syntax", "yaml-value", "file-unreadable", "nesting-too-deep",
                         "alias-expansion", "alias-loop"})
# A document read as YAML that did not become a resource (its model refused it).
NOT_A_RESOURCE = frozenset({"api-version", "kind-missing", "not-a-resource", "unknown-kind"})


def _tier(code: str) -> int:
    """Files that did not load, then documents that did not become resources, then the
    rest: each explains errors of the later tiers, so it is read first."""
    if code in ROOT_CAUSES:
        return 0
    return 1 if code in NOT_A_RESOURCE or code.startswith("schema:") else 2


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    NOTICE = "notice"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding. ``line``/``col`` are 1-based; 0 means "whole file"."""

    code: str
    message: str
    file: str = ""
    line: int = 0
    col: int = 0
    path: str = ""
    hint: str = ""
    severity: Severity = Severity.ERROR

    @property
    def location(self) -> str:
        if not self.file:
            return "<config>"
        if self.line:
            return f"{self.file}:{self.line}:{self.col}"
        return self.file

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["severity"] = str(self.severity)
        return data

    def sort_key(self) -> tuple[int, str, int, int, str, str]:
        return (_tier(self.code), self.file, self.line, self.col, self.path, self.code)


def did_you_mean(word: str, choices: Iterable[str], otherwise: str = "", *,
                 cutoff: float = 0.6) -> str:
    """A "did you mean" hint naming the choice closest to ``word``, else ``otherwise``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return f"did you mean {close[0]!r}?" if close else otherwise


@dataclass
class Diagnostics:
    """An ordered, de-duplicated bag of diagnostics collected across a run."""

    items: list[Diagnostic] = field(default_factory=list)
    _seen: set[Diagnostic] = field(default_factory=set, repr=False)

    def add(self, diagnostic: Diagnostic) -> None:
        if diagnostic not in self._seen:
            self._seen.add(diagnostic)
            self.items.append(diagnostic)

    def extend(self, diagnostics: Iterable[Diagnostic]) -> None:
        for d in diagnostics:
            self.add(d)

    def __iter__(self) -> Iterator[Diagnostic]:
        return iter(sorted(self.items, key=Diagnostic.sort_key))

    def __len__(self) -> int:
        return len(self.items)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self if d.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self if d.severity is Severity.WARNING]

    @property
    def has_errors(self) -> bool:
        return any(d.severity is Severity.ERROR for d in self.items)

