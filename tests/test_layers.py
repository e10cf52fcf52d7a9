"""The package layers hold: no module imports from a layer above its own, and no cycles.

The contract itself lives in pyproject.toml ([tool.importlinter]); docs/architecture.md
draws the same order. import-linter reads the source, so a lazy import inside a
function counts as much as one at the top of a module.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_layers_are_kept() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command;"
         " sys.exit(lint_imports_command())", "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Contracts: 1 kept, 0 broken." in done.stdout


def test_the_package_graph_has_no_cycles() -> None:
    import grimp

    graph = grimp.build_graph("reconciler", cache_dir=None)
    top = sorted(m for m in graph.modules if m.count(".") == 1 and graph.find_children(m))
    for a in top:
        for b in top:
            if a < b and graph.chain_exists(a, b, as_packages=True):
                cycle = graph.chain_exists(b, a, as_packages=True)
                assert not cycle, f"{a} and {b} import each other"
