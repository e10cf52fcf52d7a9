"""The benchmarks still run (on tiny sizes): a benchmark nobody can run proves nothing.
Only that they finish and print their tables is checked, never a time."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run(*args: str) -> str:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=600, check=False, cwd=BENCH.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_validate_scale_runs() -> None:
    out = run(str(BENCH / "validate_scale.py"), "--n", "200")
    assert "200" in out and "parse" in out


def test_plan_scale_runs() -> None:
    out = run(str(BENCH / "plan_scale.py"), "--sizes", "1k", "--repeat", "1")
    # about 1,000: the corpus is examples/config plus clones of its namespaces
    assert "plan s" in out and re.search(r"^\s*(9\d\d|1,0\d\d)\b", out, re.M), out


def test_plan_incremental_runs() -> None:
    out = run(str(BENCH / "plan_incremental.py"), "--sizes", "1k", "--repeat", "1")
    assert "warm CPU s" in out and re.search(r"^\s*1,000 \|", out, re.M), out


def test_outbox_throughput_runs() -> None:
    out = run(str(BENCH / "outbox_throughput.py"), "-n", "100")
    assert "sqlite" in out and "postgresql" in out and "skipped" not in out


def test_intake_runs() -> None:
    out = run(str(BENCH / "intake.py"), "-n", "50", "-k", "1")
    assert "sqlite" in out and "postgresql" in out and "FAILED" not in out


def test_graph_surge_runs() -> None:
    out = run(str(BENCH / "graph_surge.py"), "-n", "20", "--service-ms", "2",
              "--throttle-every", "7", "--retry-after", "0")
    assert "ratio" in out and "20 x 202, 3 x 429 (waited out)" in out
    assert "0 SEND_FAILED, 0 acknowledged but not delivered, 0 not acknowledged" in out
    alone = run(str(BENCH / "graph_surge.py"), "-n", "10", "--service-ms", "1",
                "--transport-only")
    assert "graph transport alone:" in alone and "ms CPU per send (10 sends" in alone
    floor = run(str(BENCH / "graph_surge.py"), "-n", "12", "--service-ms", "2", "--bare")
    assert "12 x 202, 0 x 429" in floor and "bare client " in floor, floor


def test_incoming_runs() -> None:
    out = run(str(BENCH / "incoming.py"), "--sizes", "30,60", "--batch", "20")
    assert "mails/s" in out and "FAILED" not in out
    assert out.count(" 30 ") + out.count(" 60 ") >= 2


def test_backoff_runs() -> None:
    out = run(str(BENCH / "backoff.py"), "-n", "200")
    assert "backoff_seconds" in out and "retry loop" in out


def test_sync_runs() -> None:
    out = run(str(BENCH / "sync.py"), "-n", "200", "--rounds", "1")
    assert "webhook->applied" in out and "resources" in out


def test_console_runs() -> None:
    out = run(str(BENCH / "console.py"), "--audit", "300", "--revisions", "25",
              "--messages", "40", "-k", "2", "--explain")
    for page in ("home /", "servers", "outbox deferred", "outbox deep page", "outbox/ID",
                 "audit deep page", "audit csv first chunk", "revision config.yaml", "sync",
                 "incoming", "api /v1/outbox (baseline)"):
        assert out.count(f"  {page} ") == 4, page  # 2 databases x 2 principals
    assert "explain last sends" in out and "explain outbox 2 namespaces" in out
    assert "skipped" not in out and "invalid" not in out
