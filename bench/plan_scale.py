"""How `reconcile plan` and `apply` scale with the number of resources.

For each size N: write N resources as YAML (one file per namespace of 10),
apply them to a fresh SQLite store, change 1 % of them, then time a cold
`reconcile plan --out` and `reconcile apply PLANFILE` as whole processes
(wall time and peak RSS of each child), plus an in-process breakdown of the
same work on a copy of the store. Prints figures; asserts nothing.

    python bench/plan_scale.py                 # 1k and 10k
    python bench/plan_scale.py --sizes 1k,10k,50k
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from reconciler.plan import render
from reconciler.plan.apply import apply_plan
from reconciler.plan.diff import diff
from reconciler.plan.model import Plan, git_info, load, save
from reconciler.policy.validate import ValidationResult
from reconciler.state import RevisionMeta, open_store

PER_NAMESPACE = 10  # 2 servers, 4 recipient filters, 4 outgoing rules
SIZES = {"1k": 1_000, "10k": 10_000, "50k": 50_000}
T = TypeVar("T")


def namespace_yaml(i: int, changed: bool) -> str:
    ns = f"tenant-{i:05}"
    docs = [f"""apiVersion: reconciler.dev/v1
kind: OutgoingServer
metadata: {{name: primary, namespace: {ns}, labels: {{env: prod}}}}
spec:
  email: desk@{ns}.example
  senderName: {ns} Desk
  replyTo: support@{ns}.example
  protocol: smtp
  host: smtp.{ns}.example
  security: starttls
  auth:
    type: oauth2
    provider: google
    clientId: {i}-desk.apps.googleusercontent.com
    clientSecret: {{secretRef: env:SECRET_{i}}}
  primary: true
""", f"""apiVersion: reconciler.dev/v1
kind: OutgoingServer
metadata: {{name: relay, namespace: {ns}}}
spec:
  email: relay@{ns}.example
  senderName: {ns} Relay
  replyTo: support@{ns}.example
  protocol: smtp
  host: relay.{ns}.example
  security: tls
  auth: {{type: basic, username: relay, password: {{secretRef: env:RELAY_{i}}}}}
  attachmentLimitMB: 10
"""]
    for f in range(4):
        domain = f"partner-{f}.example" if not (changed and f == 0) else "changed.example"
        docs.append(f"""apiVersion: reconciler.dev/v1
kind: RecipientFilter
metadata: {{name: filter-{f}, namespace: {ns}}}
spec:
  type: {"allow" if f % 2 == 0 else "ignore"}
  domains: [{ns}.example, {domain}]
  emails: [boss-{f}@{ns}.example]
""")
    for r in range(4):
        docs.append(f"""apiVersion: reconciler.dev/v1
kind: OutgoingEmailRule
metadata: {{name: rule-{r}, namespace: {ns}}}
spec:
  module: {["request", "change", "problem", "task"][r]}
  order: {10 * (r + 1)}
  match: any
  conditions:
    - {{field: department, operator: equals, value: Dept {r}}}
    - {{field: site, operator: in, values: [Site A, Site B]}}
  server: {"relay" if r % 2 else "primary"}
""")
    return "---\n".join(docs)


def write_config(root: Path, n: int, *, changed_every: int | None) -> None:
    """``changed_every``: change one resource in every that many namespaces' worth."""
    for i in range(n // PER_NAMESPACE):
        # One resource per changed namespace: 1 % of resources is 1 namespace in 10.
        changed = changed_every is not None and i % changed_every == 0
        (root / f"tenant-{i:05}.yaml").write_text(namespace_yaml(i, changed))


@dataclass
class Run:
    seconds: float
    max_rss_mb: float
    returncode: int


def run_child(args: list[str]) -> Run:
    """Run ``reconcile ARGS`` as a fresh process; wait4 gives that child's own peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen([*reconcile_command(), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode not in (0, 2):
        sys.exit(f"reconcile {' '.join(args)} failed ({proc.returncode}):\n{err}")
    return Run(seconds, usage.ru_maxrss / 1024, proc.returncode)


def reconcile_command() -> list[str]:
    exe = shutil.which("reconcile")
    return [exe] if exe else [sys.executable, "-c",
                              "from reconciler.cli.main import main; main()"]


@dataclass
class Breakdown:
    steps: dict[str, float] = field(default_factory=dict)

    def time(self, name: str, fn: Callable[[], T]) -> T:
        start = time.perf_counter()
        result = fn()
        self.steps[name] = time.perf_counter() - start
        return result


def in_process(config: Path, db: Path, work: Path) -> Breakdown:
    from reconciler.policy.validate import validate_path

    # validate_path and diff pause the GC themselves, as in the CLI commands
    return _steps(Breakdown(), config, db, work, validate_path)


def _steps(b: Breakdown, config: Path, db: Path, work: Path,
           validate_path: Callable[[Path], ValidationResult]) -> Breakdown:
    result = b.time("validate", lambda: validate_path(config))
    assert result.desired is not None, "generated config must validate"
    desired = result.desired
    store = open_store(db)
    try:
        live = b.time("snapshot", store.snapshot)
        res = b.time("diff", lambda: diff(desired, live, derived=result.derivations()))
        plan = b.time("build", lambda: Plan.build(res, desired, live, prune=False,
                                                  git=git_info(config), source=str(config)))
        b.time("text", lambda: render.text(plan))
        b.time("markdown", lambda: render.markdown(plan))
        b.time("json", lambda: render.as_json(plan))
        b.time("save", lambda: save(plan, work / "inproc.json"))
        loaded = b.time("load", lambda: load(work / "inproc.json"))
        b.time("apply", lambda: apply_plan(store, loaded, RevisionMeta(actor="bench"),
                                           lock_timeout=5, force=False))
    finally:
        store.close()
    return b


def copy_db(src: Path, dst: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{src}{suffix}").exists():
            shutil.copy(f"{src}{suffix}", f"{dst}{suffix}")


@dataclass
class Figures:
    n: int
    changed: int
    initial_apply: Run
    plan: Run
    apply: Run
    breakdown: Breakdown


def bench(n: int, keep: bool) -> Figures:
    work = Path(tempfile.mkdtemp(prefix=f"plan-scale-{n}-"))
    try:
        config, db = work / "config", work / "state.db"
        config.mkdir()
        write_config(config, n, changed_every=None)
        first = run_child(["apply", str(config), "--store", str(db), "--yes", "--actor", "bench"])
        write_config(config, n, changed_every=10)
        copy_db(db, work / "inproc.db")
        plan_file = work / "plan.json"
        plan = run_child(["plan", str(config), "--store", str(db), "--out", str(plan_file)])
        changed = len(load(plan_file).changes)
        applied = run_child(["apply", str(plan_file), "--store", str(db), "--actor", "bench",
                ])
        breakdown = in_process(config, work / "inproc.db", work)
        return Figures(n, changed, first, plan, applied, breakdown)
    finally:
        if keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def table(rows: list[Figures]) -> str:
    steps = list(rows[0].breakdown.steps) if rows else []
    head = ["resources", "changed", "first apply s", "plan s", "plan MB", "apply s", "apply MB",
            *[f"{s} s" for s in steps]]
    body = []
    for f in rows:
        body.append([
            f"{f.n:,}", f"{f.changed:,}", f"{f.initial_apply.seconds:.2f}",
            f"{f.plan.seconds:.2f}", f"{f.plan.max_rss_mb:.0f}", f"{f.apply.seconds:.2f}",
            f"{f.apply.max_rss_mb:.0f}", *[f"{f.breakdown.steps[s]:.3f}" for s in steps],
        ])
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(head)]
    lines = [" | ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1k,10k",
                        help="comma-separated, from " + ", ".join(SIZES) + " (default 1k,10k)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    args = parser.parse_args()
    sizes = []
    for s in args.sizes.split(","):
        if s.strip() not in SIZES:
            parser.error(f"unknown size {s!r}; choose from {', '.join(SIZES)}")
        sizes.append(SIZES[s.strip()])
    rows = []
    for n in sizes:
        print(f"benchmarking {n:,} resources ...", file=sys.stderr, flush=True)
        rows.append(bench(n, args.keep))
    print(table(rows))
    print("\nplan/apply: whole `reconcile` processes (cold start, SQLite store); MB = peak RSS "
          "of that process.\nThe other columns are the same work in one process: validate, "
          "snapshot (read the store), diff, build (digest), render text/markdown/json, "
          "save/load the plan file, apply (lock + commit).")
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"bench process peak RSS: {self_mb:.0f} MB")


if __name__ == "__main__":
    main()
