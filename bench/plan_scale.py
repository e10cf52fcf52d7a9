"""How `reconcile plan` and `apply` scale, side by side with octoDNS.

For each size N: clone `examples/config/` to about N resources (acme, globex
and policies kept, clones acmeNNNN/globexNNNN added, 10 resources a
namespace, see _corpus.py), apply them to a fresh SQLite store, change 1 % of
the files, then time a cold `reconcile plan --out` and `reconcile apply
PLANFILE` as whole processes (wall time and peak RSS of each child), plus an
in-process breakdown of the same work on a copy of the store. When octoDNS
1.x is importable (`pip install octodns`: a bench-only tool, not a project
dependency) it plans N A records with 1 % changed in the same run
(YamlProvider -> YamlProvider, `octodns-sync` without --doit), interleaved
with our plan runs, and the ratio of the medians is printed. `--memory`
also validates a 50 MB repo (180,000 resources of the compact generator
below): wall and peak RSS. Prints figures; asserts nothing.

    nice -n -5 python bench/plan_scale.py                 # 1k and 10k
    python bench/plan_scale.py --sizes 1k,10k,50k --repeat 5 --memory
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _corpus import (
    ROOT,
    change_examples,
    clone_examples,
    compile_checkout,
    octodns_available,
    octodns_command,
    octodns_corpus,
)

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
    cpu: float = 0.0  # user + system seconds: what a loaded, shared machine cannot inflate


def run_child(command: list[str]) -> Run:
    """Run ``command`` as a fresh process; wait4 gives that child's own peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=ROOT)
    err = proc.stderr.read().decode() if proc.stderr else ""  # octoDNS logs its plan here
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 2):
        sys.exit(f"{' '.join(command)} failed ({proc.returncode}):\n{err}")
    return Run(seconds, usage.ru_maxrss / 1024, proc.returncode,
               usage.ru_utime + usage.ru_stime)


def reconcile(*args: str) -> Run:
    # run from the checkout (cwd=ROOT puts it first on sys.path), never an installed copy
    return run_child([sys.executable, "-c", "from reconciler.cli.main import main; main()",
                      *args])


def median(runs: list[Run]) -> Run:
    """Each figure's own median."""
    mid = len(runs) // 2
    return Run(*(sorted(getattr(r, f) for r in runs)[mid]
                 for f in ("seconds", "max_rss_mb", "returncode", "cpu")))


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
    octodns: Run | None


def bench(n: int, keep: bool, repeat: int) -> Figures:
    work = Path(tempfile.mkdtemp(prefix=f"plan-scale-{n}-"))
    try:
        config, db = work / "config", work / "state.db"
        files = clone_examples(config, n)
        n = _count(config)
        first = reconcile("apply", str(config), "--store", str(db), "--yes", "--actor", "bench")
        change_examples(files)
        copy_db(db, work / "inproc.db")
        plan_file = work / "plan.json"
        dns = octodns_corpus(work / "octodns", n) if octodns_available() else None
        plans: list[Run] = []
        dns_runs: list[Run] = []
        for _ in range(repeat):  # interleaved: both see the same neighbours
            plans.append(reconcile("plan", str(config), "--store", str(db),
                                   "--out", str(plan_file)))
            if dns is not None:
                dns_runs.append(run_child(octodns_command(dns)))
        changed = len(load(plan_file).changes)
        applied = reconcile("apply", str(plan_file), "--store", str(db), "--actor", "bench")
        breakdown = in_process(config, work / "inproc.db", work)
        return Figures(n, changed, first, median(plans), applied, breakdown,
                       median(dns_runs) if dns_runs else None)
    finally:
        if keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def _count(config: Path) -> int:
    """Resources in the corpus (policies are not resources)."""
    return sum(p.read_text().count("\nkind: ") + p.read_text().startswith("kind: ")
               for p in config.rglob("*.yaml") if p.parent.name != "policies"
               and p.name != "exceptions.yaml")


def table(rows: list[Figures]) -> str:
    steps = list(rows[0].breakdown.steps) if rows else []
    head = ["resources", "changed", "first apply s", "plan s", "plan CPU s", "plan MB",
            "octoDNS s", "octoDNS CPU s", "octoDNS MB", "ratio", "CPU ratio", "apply s",
            "apply MB", *[f"{s} s" for s in steps]]
    body = []
    for f in rows:
        dns = f.octodns
        body.append([
            f"{f.n:,}", f"{f.changed:,}", f"{f.initial_apply.seconds:.2f}",
            f"{f.plan.seconds:.2f}", f"{f.plan.cpu:.2f}", f"{f.plan.max_rss_mb:.0f}",
            *([f"{dns.seconds:.2f}", f"{dns.cpu:.2f}", f"{dns.max_rss_mb:.0f}",
               f"{f.plan.seconds / dns.seconds:.2f}", f"{f.plan.cpu / dns.cpu:.2f}"]
              if dns else ["-"] * 5),
            f"{f.apply.seconds:.2f}", f"{f.apply.max_rss_mb:.0f}",
            *[f"{f.breakdown.steps[s]:.3f}" for s in steps],
        ])
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(head)]
    lines = [" | ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)


def memory(n: int = 180_000) -> str:
    """Wall time and peak RSS of validating the compact generator's ``n`` resources."""
    from validate_scale import run_fresh

    with tempfile.TemporaryDirectory(prefix="plan-scale-memory-") as tmp:
        root = Path(tmp)
        write_config(root, n, changed_every=None)
        size = sum(p.stat().st_size for p in root.glob("*.yaml"))
        wall, cpu, peak = run_fresh(root)
    return (f"validate {n:,} resources ({size / 1e6:.0f} MB of YAML): wall {wall:.1f} s, "
            f"CPU {cpu:.1f} s, peak RSS {peak:,.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1k,10k",
                        help="comma-separated, from " + ", ".join(SIZES) + " (default 1k,10k)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="cold plan runs per size (and octoDNS runs); medians shown")
    parser.add_argument("--memory", action="store_true",
                        help="also validate 180,000 resources (50 MB): wall and peak RSS")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    args = parser.parse_args()
    compile_checkout()
    sizes = []
    for s in args.sizes.split(","):
        if s.strip() not in SIZES:
            parser.error(f"unknown size {s!r}; choose from {', '.join(SIZES)}")
        sizes.append(SIZES[s.strip()])
    rows = []
    for n in sizes:
        print(f"benchmarking {n:,} resources ...", file=sys.stderr, flush=True)
        rows.append(bench(n, args.keep, args.repeat))
    print(f"plan scale (python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}, median of {args.repeat})")
    print(table(rows))
    print("\nplan/apply: whole `reconcile` processes (cold start, SQLite store); MB = peak RSS "
          "of that process.\noctoDNS: `octodns-sync` (no --doit) planning as many A records, "
          "1 % changed, YamlProvider -> YamlProvider" + ("" if octodns_available() else
          " -- not installed (pip install octodns)") + "; ratio = plan s / octoDNS s, CPU "
          "ratio the same in CPU seconds (user + system; wall time on a shared machine "
          "mostly measures the neighbours)."
          "\nThe other columns are the same work in one process: validate, "
          "snapshot (read the store), diff, build (digest), render text/markdown/json, "
          "save/load the plan file, apply (lock + commit).")
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"bench process peak RSS: {self_mb:.0f} MB")
    if args.memory:
        print(memory())


if __name__ == "__main__":
    main()
