"""Broken inputs (SPEC C4): every one reported with file:line:col, field path and plain words."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.config.diagnostics import Severity
from reconciler.policy.validate import validate_path

from .broken_cases import CASES, Case
from .helpers import assert_reported, describe, validate_files, write_tree


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_broken_input_is_reported_precisely(tmp_path: Path, case: Case) -> None:
    result = validate_files(tmp_path, case.files)

    assert_reported(result, case.expect)
    if any(e.severity is Severity.ERROR for e in case.expect):
        assert not result.ok
        assert result.desired is None
    for secret in case.absent:
        dumped = describe(result.diagnostics) + repr([d.as_dict() for d in result.diagnostics])
        assert secret not in dumped


def test_table_covers_at_least_25_distinct_inputs() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


def test_every_case_still_reported_when_all_are_validated_together(tmp_path: Path) -> None:
    """All errors at once: one run over every broken input reports each one of them."""
    for case in CASES:
        write_tree(tmp_path / case.id, case.files)
    result = validate_path(tmp_path)
    for case in CASES:
        assert_reported(result, case.expect, prefix=f"{case.id}/")


def test_empty_file_is_no_error(tmp_path: Path) -> None:
    result = validate_files(tmp_path, {
        "empty.yaml": "",
        "comments-only.yaml": "# nothing here yet\n",
        "separators.yaml": "---\n---\n",
        "filter.yaml": """
            apiVersion: reconciler.dev/v1
            kind: RecipientFilter
            metadata: {name: fine}
            spec: {type: allow, domains: [a.example]}
            """,
    })
    assert result.ok, describe(result.diagnostics)
    assert not [d for d in result.diagnostics if d.file != "filter.yaml"], describe(
        result.diagnostics)
    assert [r.model.metadata.name for r in result.resources] == ["fine"]


def test_folder_without_yaml_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("no config here\n", encoding="utf-8")
    result = validate_path(tmp_path)
    assert result.ok
    assert [(d.code, d.severity) for d in result.diagnostics] == [
        ("no-resources", Severity.WARNING)]


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    result = validate_path(tmp_path / "nope")
    assert [d.code for d in result.diagnostics.errors] == ["path-missing"]
