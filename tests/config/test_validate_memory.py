"""Memory of `reconcile validate` grows by a few KiB a resource (issue 11 item 6).

The full figure (180,000 resources, 52 MB of YAML, at most 1 GB) comes from
bench/validate_memory.py; this checks the slope on 10,000 resources, which
took ~11.5 KiB a resource before positions were packed and ~5 KiB after. The
bound sits between the two with room for allocator and Python differences;
peak RSS is read from a helper process so no other child of the test run counts.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from .helpers import REPO

BENCH = REPO / "bench"
KIB_PER_RESOURCE = 8.0


def _bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def test_validate_memory_grows_by_a_few_kib_per_resource(tmp_path: Path) -> None:
    plan_scale, validate_scale = _bench("plan_scale"), _bench("validate_scale")
    peaks = {}
    for n in (10, 10_000):
        root = tmp_path / f"n{n}"
        root.mkdir()
        plan_scale.write_config(root, n, changed_every=None)
        peaks[n] = validate_scale.run_fresh(root)[2]  # MiB
    slope = (peaks[10_000] - peaks[10]) * 1024 / (10_000 - 10)
    assert slope <= KIB_PER_RESOURCE, (
        f"validate takes {slope:.1f} KiB a resource (peaks {peaks} MiB); "
        f"at most {KIB_PER_RESOURCE} keeps 180,000 resources under 1 GB")


def test_memory_benchmark_runs() -> None:
    proc = subprocess.run([sys.executable, str(BENCH / "validate_memory.py"), "--n", "200",
                           "--stages"], capture_output=True, text=True, timeout=600,
                          cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "200 resources" in proc.stdout and "peak RSS" in proc.stdout
    assert "policies" in proc.stdout
