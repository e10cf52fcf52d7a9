"""The code stays easy to live in: small modules, simple functions, nothing dead.

Issue 12 set these bounds; a change that crosses one should split the module or the
function, or say in vulture_whitelist.py why a name only looks unused.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "reconciler"
MAX_MODULE_LINES = 500
# radon ranks A (1-5), B (6-10), C (11-20), D (21-30), E, F: C is the most a function may be.
WORST_RANK = "C"


def _modules() -> list[Path]:
    # Alembic revisions are frozen history: they are never edited, so never split.
    return [p for p in sorted(PACKAGE.rglob("*.py")) if "migrations" not in p.parts]


def test_no_module_is_longer_than_500_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _modules()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_no_function_is_more_complex_than_rank_c() -> None:
    from radon.complexity import cc_rank, cc_visit

    complex_ = [f"{p.relative_to(ROOT)}:{block.lineno} {block.fullname} "
                f"{cc_rank(block.complexity)} ({block.complexity})"
                for p in _modules() for block in cc_visit(p.read_text())
                if cc_rank(block.complexity) > WORST_RANK]
    assert complex_ == []


@pytest.mark.parametrize("confidence", [60])
def test_vulture_finds_no_dead_code(confidence: int) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vulture", "reconciler", "vulture_whitelist.py",
         f"--min-confidence={confidence}", "--exclude=reconciler/state/migrations"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.stdout == "", done.stdout
    assert done.returncode == 0, done.stderr
