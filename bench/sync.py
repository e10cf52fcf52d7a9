"""Push to applied: how long the daemon's syncer takes for one changed resource (SPEC X5).

A git repository with N resources (bench/plan_scale.py's generator, 10 per
namespace) and a SyncPolicy (mode apply, verify off) for the namespace that
changes; the store gets its first import with `reconcile apply DIR --yes`;
`reconcile daemon --sync-repo` follows the repository with a one-hour poll, so
only the webhook makes it sync. Then, per round, one commit changes one
RecipientFilter, a signed GitHub push webhook is posted, and the time until
the store names that commit as applied is measured, with the daemon's CPU
(the supervisor, its intake and worker processes and their git children) over
the same span, starting from an idle daemon. The baseline, in the same run: a
cold validation and plan of the same folder (what each sync cost before it was
incremental), timed in the bench process. Prints figures; asserts nothing.

    python bench/sync.py              # 10,000 resources, 5 rounds
    python bench/sync.py -n 1000 --rounds 1
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from statistics import median

from _cpu import process_cpu
from _daemon import reconcile_command
from _postfix import free_port
from plan_scale import PER_NAMESPACE, write_config

from reconciler.plan.folder import plan_against
from reconciler.policy.validate import validate_path
from reconciler.state import Store, open_store

# a fresh webhook secret per run, handed to the daemon as a secret reference
SECRET = secrets.token_urlsafe(24)
POLICY = """apiVersion: reconciler.dev/v1
kind: SyncPolicy
metadata: {name: bench, namespace: tenant-00000}
spec: {mode: apply, selfHeal: warn, verify: {enabled: false}}
"""
WAIT_S = 600.0
STOP_WAIT_S = 300.0


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@example.test",
           "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "bench@example.test"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def wait(check: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.01)


def daemon_cpu(pid: int) -> float:
    """CPU seconds of the daemon: the supervisor and its processes (intake, workers; the
    syncer runs in the intake one), each with the git children it waited for."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children += [int(c) for c in task.read_text().split()]
        except OSError:
            continue
    return process_cpu(pid, reaped_children=True) + sum(
        process_cpu(c, reaped_children=True) for c in children)


def settle(pid: int) -> None:
    """Wait until the daemon is idle: the previous revision's config reload (every part
    loads the new snapshot) must not be counted in the next round."""
    before = daemon_cpu(pid)
    while True:
        time.sleep(1.0)
        now = daemon_cpu(pid)
        if now - before < 0.05:
            return
        before = now


def push(port: int, sha: str) -> None:
    body = json.dumps({"ref": "refs/heads/main", "after": sha}).encode()
    mac = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/sync/webhook", data=body, method="POST",
        headers={"X-Hub-Signature-256": f"sha256={mac}", "X-GitHub-Event": "push",
                 "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 202, answer.status


def bench(n: int, rounds: int, work: Path) -> tuple[list[tuple[float, float]], list[float]]:
    bare, tree = work / "origin.git", work / "work"
    git("init", "-q", "--bare", "--initial-branch=main", str(bare), cwd=work)
    git("init", "-q", "--initial-branch=main", str(tree), cwd=work)
    config = tree / "config"
    config.mkdir()
    write_config(config, n, changed_every=None)
    (config / "sync-policy.yaml").write_text(POLICY)
    git("add", "-A", cwd=tree)
    git("commit", "-qm", "import", cwd=tree)
    git("push", "-q", str(bare), "HEAD:main", cwd=tree)
    store_path = work / "state.db"
    subprocess.run([*reconcile_command(), "apply", str(config), "--yes", "--store",
                    str(store_path)], check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    daemon = subprocess.Popen(
        [*reconcile_command(), "daemon", "--store", str(store_path), "--listen",
         f"127.0.0.1:{port}", "--sync-repo", str(bare), "--sync-path", "config",
         "--sync-interval", "3600", "--sync-webhook-secret-ref", "env:BENCH_SYNC_SECRET",
         "--sync-cache-dir", str(work / "cache"), "--health-interval", "3600",
         "--log-level", "warning"],
        env={**os.environ, "BENCH_SYNC_SECRET": SECRET}, stderr=subprocess.DEVNULL)
    results: list[tuple[float, float]] = []
    baseline: list[float] = []
    try:
        with open_store(store_path) as store:
            first = git("rev-parse", "HEAD", cwd=tree)
            wait(lambda: store.sync.get().last_applied == first, "the first sync")
            for r in range(rounds):
                target = config / "tenant-00000.yaml"
                target.write_text(target.read_text().replace(
                    "partner-0.example", f"round-{r}.example", 1).replace(
                    f"round-{r - 1}.example", f"round-{r}.example", 1))
                git("commit", "-qam", f"round {r}", cwd=tree)
                git("push", "-q", str(bare), "HEAD:main", cwd=tree)
                sha = git("rev-parse", "HEAD", cwd=tree)
                settle(daemon.pid)
                cpu = daemon_cpu(daemon.pid)
                start = time.perf_counter()
                push(port, sha)
                wait(lambda s=sha: store.sync.get().last_applied == s, f"round {r}")
                results.append((time.perf_counter() - start,
                                daemon_cpu(daemon.pid) - cpu))
            baseline = cold_plans(config, store, rounds)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(STOP_WAIT_S)  # a sync in flight finishes first
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    return results, baseline


def cold_plans(config: Path, store: Store, rounds: int) -> list[float]:
    """The baseline: what each sync cost before it was incremental, a cold validation
    and plan of the whole folder against a fresh snapshot, timed in this process."""
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        plan_against(config, validate_path(config), store, prune=False)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="resources (default 10,000)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        results, baseline = bench(max(args.n, PER_NAMESPACE), args.rounds, Path(tmp))
    print(f"{args.n:,} resources, one RecipientFilter changed per commit")
    print(f"{'round':>5} {'webhook->applied s':>19} {'daemon CPU s':>13}")
    for r, (seconds, cpu) in enumerate(results):
        print(f"{r:>5} {seconds:>19.2f} {cpu:>13.2f}")
    latency = [r[0] for r in results]
    print(f"webhook->applied median {median(latency):.2f} s (min {min(latency):.2f}, "
          f"max {max(latency):.2f}); daemon CPU median {median(r[1] for r in results):.2f} s")
    if baseline:
        print(f"baseline, a cold validate + plan of the same folder in-process: median "
              f"{median(baseline):.2f} s (min {min(baseline):.2f}, max {max(baseline):.2f})")
    print("latency: from the signed push webhook to the store naming the commit applied; "
          "CPU: the daemon's processes and their git children over the same span")


if __name__ == "__main__":
    main()
