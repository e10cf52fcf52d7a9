"""zizmor (the GitHub Actions security linter, from PyPI via the test extra) finds
nothing at medium severity or above in the workflows (SPEC S4). It runs offline:
the audits that would ask GitHub's API are skipped, the rest need no network.

A missing zizmor FAILS: a security lint that silently skipped would prove nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .kit import WORKFLOWS

INSTALL = 'python3 -m pip install -e ".[test]"'


def _zizmor() -> str:
    # The wheel puts the binary beside this interpreter; a shell may not have it on PATH.
    beside = Path(sys.executable).with_name("zizmor")
    found = str(beside) if beside.is_file() else shutil.which("zizmor")
    if found is None:
        pytest.fail(f"zizmor is not installed; run `{INSTALL}`", pytrace=False)
    return found


def zizmor(*paths: Path) -> list[dict[str, Any]]:
    """Findings at medium severity or above, as zizmor's JSON objects."""
    proc = subprocess.run(
        [_zizmor(), "--offline", "--min-severity", "medium", "--format", "json",
         "--no-progress", *map(str, paths)],
        capture_output=True, text=True, timeout=300, check=False)
    # zizmor exits 0 when clean, 10-14 by the highest severity found, 1-2 on its own errors.
    assert proc.returncode == 0 or proc.returncode >= 10, f"zizmor failed: {proc.stderr}"
    findings: list[dict[str, Any]] = json.loads(proc.stdout or "[]")
    return findings


def _describe(finding: dict[str, Any]) -> str:
    where = finding["locations"][0]
    path = json.dumps(where["symbolic"]["key"])
    line = where["concrete"]["location"]["start_point"]["row"] + 1
    return (f"{path}:{line}: {finding['ident']} ({finding['determinations']['severity']}): "
            f"{finding['desc']}")


def test_zizmor_finds_nothing_at_medium_or_above() -> None:
    findings = zizmor(WORKFLOWS)
    assert findings == [], "\n".join(map(_describe, findings))


def test_zizmor_reports_an_unsafe_workflow(tmp_path: Path) -> None:
    """The lint is alive: the holes plan.yml and apply.yml used to have are reported."""
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "unsafe.yml").write_text(
        "on: pull_request_target\n"
        "jobs:\n"
        "  plan:\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - uses: actions/checkout@v4\n"
        "        with:\n"
        "          ref: ${{ github.event.pull_request.head.sha }}\n"
        "      - run: echo \"${{ github.event.pull_request.title }}\"\n"
    )
    found = {f["ident"] for f in zizmor(workflows)}
    assert {"unpinned-uses", "template-injection", "dangerous-triggers"} <= found, found
