"""N simultaneous `reconcile apply DIR --yes` on one store, on SQLite and PostgreSQL.

One apply creates the store with a small config (two namespaces, four
resources); then N processes start at once, each applying its own variant
(another partner domain in both recipient filters, so every one of them is a
change) with the default --lock-timeout. Prints how many exited 0, how many
were refused as stale, how many said they waited for the lock, the wall time,
the number of revisions and whether `history verify` passes. Asserts nothing.

    python bench/concurrent_applies.py                 # N=20, both stores
    python bench/concurrent_applies.py -n 40 --only sqlite
    python bench/concurrent_applies.py --pg postgresql://me@db:5432/bench
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from _stores import postgres_url, sqlite_url

DEFAULT_PG = os.environ.get("RECONCILE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
NAMESPACES = ("north", "south")


def config(root: Path, domain: str) -> Path:
    root.mkdir(parents=True)
    for ns in NAMESPACES:
        (root / f"{ns}.yaml").write_text(f"""apiVersion: reconciler.dev/v1
kind: OutgoingServer
metadata: {{name: primary, namespace: {ns}}}
spec:
  email: desk@{ns}.example
  senderName: {ns} desk
  replyTo: support@{ns}.example
  protocol: smtp
  host: smtp.{ns}.example
  security: tls
  auth: {{type: basic, username: desk, password: {{secretRef: env:{ns.upper()}_PW}}}}
  primary: true
---
apiVersion: reconciler.dev/v1
kind: RecipientFilter
metadata: {{name: filter-0, namespace: {ns}}}
spec:
  type: allow
  domains: [{ns}.example, {domain}]
""")
    return root


def reconcile(*args: str) -> list[str]:
    return [sys.executable, "-m", "reconciler", *args]


def run_store(name: str, url: str, n: int, work: Path) -> None:
    first = subprocess.run(reconcile("apply", str(config(work / "base", "partner.example")),
                                     "--store", url, "--yes", "--actor", "setup"),
                           capture_output=True, text=True, check=False)
    if first.returncode:
        print(f"{name:<10}  setup apply failed: {first.stderr.strip()}")
        return
    dirs = [config(work / f"c{i}", f"partner-{i}.example") for i in range(n)]
    start = time.monotonic()
    procs = [subprocess.Popen(reconcile("apply", str(d), "--store", url, "--yes",
                                        "--actor", f"applier-{i}"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i, d in enumerate(dirs)]
    errs = [p.communicate()[1] for p in procs]
    wall = time.monotonic() - start
    ok = sum(p.returncode == 0 for p in procs)
    stale = sum("changed since this plan was made" in e for e in errs)
    waited = sum("waiting for the apply lock" in e for e in errs)
    verify = subprocess.run(reconcile("history", "verify", "--store", url),
                            capture_output=True, text=True, check=False)
    print(f"{name:<10}  {ok:>2}/{n} exit 0, {stale:>2} stale, {waited:>2} waited, "
          f"wall {wall:5.1f} s; {verify.stdout.strip() or verify.stderr.strip()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="simultaneous applies (default 20)")
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL URL (a schema is made)")
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    args = parser.parse_args()
    targets: list[tuple[str, Callable[[], AbstractContextManager[str | None]]]] = []
    if args.only != "postgresql":
        targets.append(("sqlite", lambda: sqlite_url("concurrent-applies")))
    if args.only != "sqlite":
        targets.append(("postgresql", lambda: postgres_url(args.pg, "concurrent_applies")))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}, N={args.n}")
    for name, make in targets:
        with make() as url, tempfile.TemporaryDirectory(prefix="concurrent-applies-") as tmp:
            if url is not None:
                run_store(name, url, args.n, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
