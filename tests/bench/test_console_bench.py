"""bench/console_ops.py still runs (tiny sizes); only that it prints its table is checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_console_bench_runs() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "console_ops.py"), "--servers", "1",
                           "--messages", "5", "--repeat", "2"], capture_output=True, text=True,
                          timeout=300, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "console /console/servers" in proc.stdout and "baseline /v1/outbox" in proc.stdout
