"""Helpers shared by the config and CLI tests: write YAML trees, run validate, find findings."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from reconciler.config.diagnostics import Diagnostic, Severity
from reconciler.policy.validate import ValidationResult, validate_path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "config"
SCHEMAS = REPO / "schemas"


def write_tree(root: Path, files: Mapping[str, str]) -> Path:
    """Write ``files`` (relative name -> YAML text, dedented) below ``root``."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return root


def validate_files(root: Path, files: Mapping[str, str]) -> ValidationResult:
    return validate_path(write_tree(root, files))


@dataclass(frozen=True)
class Expect:
    """One diagnostic a broken input must produce: where, and the exact words."""

    file: str
    line: int
    col: int
    path: str
    message: str  # exact; "{dir}" stands for the folder prefix of files named in it
    severity: Severity = Severity.ERROR
    hint: str | None = None  # a substring of the hint, when given

    def text_line(self, prefix: str = "") -> str:
        """The first line of the text rendering: ``file:line:col  path  severity: message``."""
        path = f"  {self.path}" if self.path else ""
        message = self.message.replace("{dir}", prefix)
        return f"{prefix}{self.file}:{self.line}:{self.col}{path}  {self.severity}: {message}"

    def matches(self, d: Diagnostic, prefix: str = "") -> bool:
        return (
            (d.file, d.line, d.col, d.path, d.message, d.severity)
            == (prefix + self.file, self.line, self.col, self.path,
                self.message.replace("{dir}", prefix), self.severity)
            and (self.hint is None or self.hint in d.hint)
        )


def describe(diagnostics: Iterable[Diagnostic]) -> str:
    """Readable dump for assertion messages."""
    return "\n".join(
        f"{d.location}  {d.path}  {d.severity}: {d.message}  [{d.code}] hint={d.hint!r}"
        for d in diagnostics
    )


def assert_reported(result: ValidationResult, expected: Iterable[Expect], prefix: str = "") -> None:
    found = list(result.diagnostics)
    for exp in expected:
        assert any(exp.matches(d, prefix) for d in found), (
            f"expected {exp.text_line(prefix)!r} (hint ~ {exp.hint!r}); got:\n{describe(found)}"
        )


def forbidden_secret_file(tmp_path: Path, value: str) -> Path:
    """An allowed secret folder (returned) beside a file outside it holding ``value``,
    reachable from the folder by ``..`` and by the symlink ``link``. The caller points
    RECONCILE_SECRET_DIRS at the folder."""
    secrets, outside = tmp_path / "secrets", tmp_path / "outside"
    secrets.mkdir()
    outside.mkdir()
    (outside / "shadow").write_text(value + "\n")
    (secrets / "link").symlink_to(outside / "shadow")
    return secrets
