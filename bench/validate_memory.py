"""Peak memory of `reconcile validate` on a large config repo.

Issue 11 asks that a 50 MB config of about 180,000 resources validates in at
most 1 GB (it took 2.1 GB). This writes N resources with plan_scale.py's
generator (one file per namespace of 10: two outgoing servers, four recipient
filters, four rules; 180,000 resources are 52 MB), then runs
`reconcile validate DIR --format json > /dev/null` as a fresh process and
prints its peak RSS (ru_maxrss of that one child, read in a helper process so
nothing else counts), its CPU seconds and the repo's size. With --stages it
also prints the RSS after each stage of the same pipeline, run in a fresh
process, to show where the memory goes.

Prints figures only, asserts nothing.

    python bench/validate_memory.py                    # N = 180,000
    python bench/validate_memory.py --n 20000 --stages
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from plan_scale import PER_NAMESPACE, write_config  # noqa: E402
from validate_scale import run_fresh  # noqa: E402

_STAGES = """
import json, resource, sys
from datetime import date
from pathlib import Path

def rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0

from reconciler.policy import validate as v
from reconciler.config.checks import check_semantics
from reconciler.config.derive import derive_all
from reconciler.config.diagnostics import Diagnostics
from reconciler.config.loader import load_tree
from reconciler.config.references import check_references
from reconciler.config.gcpause import gc_paused
from reconciler.policy import engine

rows = [("imports", rss_mb())]
with gc_paused():  # as validate_path runs
    diags = Diagnostics()
    documents = load_tree(Path(sys.argv[1]), diags)
    rows.append(("parse", rss_mb()))
    resources, policy_docs = v.parse_documents(documents, diags)
    rows.append(("models", rss_mb()))
    resources = v._duplicates(resources, diags)
    derive_all(resources)
    rows.append(("derive", rss_mb()))
    diags.extend(check_references(resources))
    diags.extend(check_semantics(resources))
    rows.append(("refs+checks", rss_mb()))
    policies = engine.parse_policies([*engine.shipped_documents(diags), *policy_docs], diags)
    diags.extend(engine.evaluate(policies, resources, today=date.today()))
    rows.append(("policies", rss_mb()))
    result = v.ValidationResult(diags, resources)
    result.desired  # what plan builds on top; validate never asks for it
    rows.append(("desired (plan only)", rss_mb()))
rows.append(("peak", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
print(json.dumps(rows))
"""


def repo_size(root: Path) -> tuple[int, int]:
    """(files, bytes) of the YAML below ``root``."""
    files = list(root.rglob("*.yaml"))
    return len(files), sum(f.stat().st_size for f in files)


def stages(root: Path) -> list[tuple[str, float]]:
    out = subprocess.run([sys.executable, "-c", _STAGES, str(root)], check=True,
                         capture_output=True, text=True, cwd=BENCH.parent).stdout
    return [(name, mb) for name, mb in json.loads(out)]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=180_000, help="resources (default 180,000)")
    parser.add_argument("--stages", action="store_true",
                        help="also print the RSS after each stage, in a fresh process")
    args = parser.parse_args()
    n = max(PER_NAMESPACE, args.n - args.n % PER_NAMESPACE)
    with tempfile.TemporaryDirectory(prefix="validate-memory-") as tmp:
        root = Path(tmp) / "config"
        root.mkdir()
        write_config(root, n, changed_every=None)
        files, size = repo_size(root)
        wall, cpu, peak = run_fresh(root)
        small = Path(tmp) / "small"
        small.mkdir()
        write_config(small, PER_NAMESPACE, changed_every=None)
        base = run_fresh(small)[2]  # start-up and imports
        rows = stages(root) if args.stages else []
    print(f"\nvalidate memory  (python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load "
          f"average {os.getloadavg()[0]:.1f})")
    print(f"repo: {n:,} resources in {files:,} files, {size / 1e6:.1f} MB of YAML")
    print(f"`reconcile validate DIR --format json`: peak RSS {peak:,.0f} MiB "
          f"({peak * 1.048576:,.0f} MB), CPU {cpu:.1f} s, wall {wall:.1f} s")
    print(f"start-up alone (a {PER_NAMESPACE}-resource repo): {base:,.0f} MiB; the rest is "
          f"{(peak - base) * 1024 / n:.2f} KiB a resource")
    if rows:
        print("\nRSS after each stage, in-process (MiB):")
        for name, mb in rows:
            print(f"  {name:<20} {mb:>8,.0f}")


if __name__ == "__main__":
    main()
