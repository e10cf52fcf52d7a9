"""pyproject.toml says what reconciler/ really imports: no more, no less.

Every third-party module imported anywhere in reconciler/ must come from a
declared runtime dependency (or, for an import that is guarded as optional, a
declared extra), and every runtime dependency must be imported somewhere, unless
it is loaded by another package on our behalf (listed below with the reason).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Declared for what another package loads by name, never imported by us.
LOADED_FOR_US = {
    "psycopg": "SQLAlchemy loads it for postgresql+psycopg URLs",
    "httptools": "uvicorn picks its C HTTP parser up when installed",
}
# Optional modules that may be absent here, with the distribution that provides them.
OPTIONAL = {"aiohttp_socks": "aiohttp-socks"}


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string (PEP 503)."""
    name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def _project() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)["project"]


def _runtime() -> set[str]:
    return {_name(r) for r in _project()["dependencies"]}  # type: ignore[attr-defined]


def _extras() -> set[str]:
    extras = _project()["optional-dependencies"]  # type: ignore[index]
    return {_name(r) for key, reqs in extras.items() if key != "test" for r in reqs}


def _imports() -> dict[str, set[str]]:
    """Top-level third-party module -> the files of reconciler/ that import it."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "reconciler").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top != "reconciler" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _distributions(module: str) -> set[str]:
    dists = packages_distributions().get(module) or [OPTIONAL.get(module, module)]
    return {_name(d) for d in dists}


def test_every_imported_module_is_declared() -> None:
    declared = _runtime() | _extras()
    missing = {module: sorted(files) for module, files in _imports().items()
               if not _distributions(module) & declared}
    assert missing == {}, f"imported but not in pyproject.toml dependencies: {missing}"


def test_optional_imports_are_extras_not_runtime() -> None:
    for module, dist in OPTIONAL.items():
        assert _name(dist) in _extras() - _runtime(), module


def test_every_runtime_dependency_is_imported() -> None:
    imported = set().union(*(_distributions(m) for m in _imports()))
    unused = _runtime() - imported - set(LOADED_FOR_US)
    assert unused == set(), f"declared but never imported by reconciler/: {sorted(unused)}"


def test_test_only_packages_stay_out_of_runtime() -> None:
    assert "jsonschema" not in _runtime()
    assert "jsonschema" in {_name(r) for r in _project()["optional-dependencies"]["test"]}  # type: ignore[index]
