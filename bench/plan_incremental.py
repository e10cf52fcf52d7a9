"""What the plan cache buys: a plan after changing 1 % of the files, cold and warm.

For each size: clone ``examples/config`` (every kind, policies and an
exception) into namespaces until there are N resources, apply it to a fresh
SQLite store, run one `reconcile plan` (which fills ``.reconcile/cache/``),
change one resource in 1 % of the files, then time `reconcile plan --no-cache`
(cold) and `reconcile plan` (warm: the cache as it was before the change) as
whole processes, alternating, median of ``--repeat``. When octoDNS 1.x is
importable (`pip install octodns`, bench-only) it plans as many A records with
1 % changed in the same run, interleaved with our plans (same corpus and
command as bench/plan_scale.py), and the warm plan's ratio to it is printed in
wall and in CPU seconds. Also times the validation alone in this process (no
start-up, no store), and the fixed cost of a process: the CPU of `reconcile
--version` (interpreter and CLI start-up) and the seconds a warm plan spends
importing, as ``python -X importtime`` sums them. The two plans are checked to be the same. Prints
figures; asserts nothing else.

    python bench/plan_incremental.py                      # 1k, 10k and 50k
    python bench/plan_incremental.py --sizes 1k,10k --repeat 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _corpus import compile_checkout, octodns_available, octodns_command, octodns_corpus

from reconciler.plan.model import load
from reconciler.policy.incremental import validate_incremental
from reconciler.policy.validate import validate_path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "config"
SIZES = {"1k": 1_000, "10k": 10_000, "50k": 50_000}
CHANGED_FILE = "acme/outgoing-servers.yaml"
CHANGE = ("senderName: Acme IT Help Desk", "senderName: Acme IT Help Desk (changed)")


def write_config(root: Path, n: int) -> int:
    """Copies of the examples' namespaces (clone 0 keeps their names, so the
    exception in policies/ finds its resource) until ``n`` resources; files written."""
    per_clone = sum(t.count("\nkind:") for t in _texts().values())
    shutil.copytree(EXAMPLES / "policies", root / "policies")
    files = 1
    for i in range(max(1, n // per_clone)):
        for name, text in _texts().items():
            if i:
                text = text.replace("acme", f"acme{i}").replace("globex", f"globex{i}")
            path = root / f"c{i:05}" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            files += 1
    return files


def _texts() -> dict[str, str]:
    return {p.relative_to(EXAMPLES).as_posix(): p.read_text()
            for p in sorted(EXAMPLES.rglob("*.yaml")) if p.parent.name != "policies"}


def change_files(root: Path, files: int) -> int:
    """Change one resource in 1 % of the files (spread over the repo)."""
    clones = sorted(root.glob("c*"))
    count = max(1, files // 100)
    step = max(1, len(clones) // count)
    for clone in clones[::step][:count]:
        path = clone / CHANGED_FILE
        path.write_text(path.read_text().replace(*CHANGE))
    return min(count, len(clones[::step]))


def run_child(args: list[str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one `reconcile ARGS` process started in
    ``cwd`` (where its cache is): on a shared machine the CPU figure is the steadier."""
    return run_command([sys.executable, "-m", "reconciler", *args], cwd)


def run_command(command: list[str], cwd: Path) -> tuple[float, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    err = proc.stderr.read().decode() if proc.stderr else ""  # octoDNS logs its plan here
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 2):
        sys.exit(f"{' '.join(command)} failed ({code}):\n{err}")
    return seconds, usage.ru_utime + usage.ru_stime


@dataclass
class Figures:
    n: int
    files: int
    changed: int
    cold: float
    warm: float
    unchanged: float
    cold_cpu: float
    warm_cpu: float
    validate_cold: float
    validate_warm: float
    startup_cpu: float  # `reconcile --version`
    imports: float  # of a warm plan, summed by -X importtime
    octodns: float | None  # wall, as many A records with 1 % changed, same run
    octodns_cpu: float | None


def import_seconds(args: list[str], cwd: Path) -> float:
    """Seconds one `reconcile ARGS` process spends importing: the cumulative times of
    the top-level lines of ``python -X importtime`` (which itself adds a little)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "reconciler", *args],
                          cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, check=False)
    total = 0
    for line in proc.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) == 3 and fields[1].strip().isdigit() and fields[2][1:2] != " ":
            total += int(fields[1])  # a nested import is indented under its importer
    return total / 1e6


def _median(times: list[tuple[float, float]], index: int = 0) -> float:
    return sorted(t[index] for t in times)[len(times) // 2]


def bench(n: int, repeat: int) -> Figures:
    work = Path(tempfile.mkdtemp(prefix=f"plan-incremental-{n}-"))
    try:
        config, db, cache = work / "config", work / "state.db", work / ".reconcile" / "cache"
        files = write_config(config, n)
        cache.parent.mkdir()  # the cache is used where .reconcile/ exists
        store = ["--store", str(db)]
        run_child(["apply", str(config), *store, "--yes", "--actor", "bench"], cwd=work)
        run_child(["plan", str(config), *store], cwd=work)  # fills the cache
        unchanged = run_child(["plan", str(config), *store], cwd=work)[0]  # warm, no change
        shutil.copytree(cache, work / "cache-before")
        changed = change_files(config, files)
        dns = octodns_corpus(work / "octodns", n) if octodns_available() else None
        cold: list[tuple[float, float]] = []
        warm: list[tuple[float, float]] = []
        startup: list[tuple[float, float]] = []
        dns_runs: list[tuple[float, float]] = []
        for _ in range(repeat):  # interleaved: all three see the same neighbours
            if dns is not None:
                dns_runs.append(run_command(octodns_command(dns), work))
            cold.append(run_child(["plan", str(config), *store, "--no-cache", "--out",
                                   str(work / "cold.json")], cwd=work))
            shutil.rmtree(cache)
            shutil.copytree(work / "cache-before", cache)
            warm.append(run_child(["plan", str(config), *store, "--out",
                                   str(work / "warm.json")], cwd=work))
            startup.append(run_child(["--version"], cwd=work))
        shutil.rmtree(cache)
        shutil.copytree(work / "cache-before", cache)
        imports = import_seconds(["plan", str(config), *store], cwd=work)
        same = [c.key for c in load(work / "cold.json").changes] == \
            [c.key for c in load(work / "warm.json").changes]
        assert same, "the warm plan differs from the cold one"
        start = time.perf_counter()
        validate_path(config)
        validate_cold = time.perf_counter() - start
        shutil.rmtree(cache)
        shutil.copytree(work / "cache-before", cache)
        start = time.perf_counter()
        validate_incremental(config, cache)
        validate_warm = time.perf_counter() - start
        return Figures(n, files, changed, _median(cold), _median(warm), unchanged,
                       _median(cold, 1), _median(warm, 1), validate_cold, validate_warm,
                       _median(startup, 1), imports,
                       _median(dns_runs) if dns_runs else None,
                       _median(dns_runs, 1) if dns_runs else None)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table(rows: list[Figures]) -> str:
    head = ["resources", "files", "changed files", "cold plan s", "warm plan s", "warm/cold",
            "cold CPU s", "warm CPU s", "CPU warm/cold", "warm, no change s",
            "validate cold s", "validate warm s", "start-up CPU s", "warm imports s",
            "octoDNS s", "octoDNS CPU s",
            "warm/octoDNS", "CPU warm/octoDNS"]
    body = [[f"{f.n:,}", f"{f.files:,}", f"{f.changed}", f"{f.cold:.2f}", f"{f.warm:.2f}",
             f"{f.warm / f.cold:.2f}", f"{f.cold_cpu:.2f}", f"{f.warm_cpu:.2f}",
             f"{f.warm_cpu / f.cold_cpu:.2f}", f"{f.unchanged:.2f}", f"{f.validate_cold:.3f}",
             f"{f.validate_warm:.3f}", f"{f.startup_cpu:.3f}", f"{f.imports:.3f}",
             *_octodns(f)] for f in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(head)]
    lines = [" | ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)


def _octodns(f: Figures) -> list[str]:
    if f.octodns is None or f.octodns_cpu is None:
        return ["-"] * 4
    return [f"{f.octodns:.2f}", f"{f.octodns_cpu:.2f}", f"{f.warm / f.octodns:.2f}x",
            f"{f.warm_cpu / f.octodns_cpu:.2f}x"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1k,10k,50k",
                        help="comma-separated, from " + ", ".join(SIZES))
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per plan (and octoDNS runs); medians shown")
    args = parser.parse_args()
    compile_checkout()
    rows = []
    for size in args.sizes.split(","):
        if size.strip() not in SIZES:
            parser.error(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
        print(f"benchmarking {size} ...", file=sys.stderr, flush=True)
        rows.append(bench(SIZES[size.strip()], args.repeat))
        print(table(rows[-1:]), file=sys.stderr, flush=True)  # progress on long runs
    print(f"plan incremental (python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load "
          f"average {os.getloadavg()[0]:.1f}, median of {args.repeat})")
    print(table(rows))
    print("\nplans: whole `reconcile plan --out` processes (CPU = user + system of that "
          "process) on a SQLite store, 1 % of the files changed; warm = with "
          ".reconcile/cache/ as the plan before the change left it.\n"
          "validate: the validation alone in this process.\nstart-up: CPU of "
          "`reconcile --version`; warm imports: seconds a warm plan spends importing "
          "(python -X importtime, top-level lines summed).\noctoDNS: `octodns-sync` (no "
          "--doit) planning as many A records, 1 % changed, YamlProvider -> YamlProvider, "
          "interleaved with the plans" + ("" if octodns_available() else
          " -- not installed (pip install octodns)") + "; warm/octoDNS = warm plan s / "
          "octoDNS s, CPU the same in CPU seconds.")


if __name__ == "__main__":
    main()
