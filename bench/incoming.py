"""Incoming mail throughput and memory: a Dovecot mailbox -> ticket events in the store.

For each size N, a child process (so memory figures do not mix) starts the
real :class:`~reconciler.incoming.runner.IncomingRunner` over a fresh store
(SQLite by default, ``--store pg`` for PostgreSQL) against a private Dovecot
(bench/_dovecot.py) whose mailbox was preloaded with N mails of about 2 KB,
and times it from start until N events are durable and marked done. Prints
mails/s, the process's RSS high-water mark and the tracemalloc peak of the
fetch-and-process phase; the peaks of the sizes side by side show whether
memory grows with the mailbox (it should not: the fetcher lists UIDs and
downloads one mail at a time). ``--no-tracemalloc`` measures without its
overhead (tracemalloc costs throughput; the default reports both figures from
one run, mails/s then includes that overhead). Asserts nothing.

    python bench/incoming.py                       # 1,000 and 5,000 mails, SQLite
    python bench/incoming.py --sizes 5000 --store pg
    python bench/incoming.py --sizes 200 --batch 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _dovecot import DovecotInstance
from _stores import postgres_url, sqlite_url

DEFAULT_PG = os.environ.get("RECONCILE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PASSWORD_ENV = "BENCH_INCOMING_PASSWORD"


def config(store: Any, dovecot: DovecotInstance, user: Any) -> None:
    from reconciler.config.desired import CanonicalResource, ResourceKey
    from reconciler.state import Action, Change, RevisionMeta

    def res(kind: str, name: str, spec: dict[str, Any]) -> CanonicalResource:
        return CanonicalResource.build(ResourceKey(kind, "default", name), "reconciler.dev/v1",
                                       spec, None)

    server = res("IncomingServer", "support", {
        "email": "desk@example.test", "protocol": "imaps", "host": "127.0.0.1",
        "port": dovecot.imaps, "auth": {"type": "basic", "username": user.name,
                                        "password": {"secretRef": f"env:{PASSWORD_ENV}"}}})
    settings = res("MailSettings", "settings", {"guestTickets": True})
    store.commit([Change(Action.CREATE, r.key, None, r) for r in (server, settings)],
                 RevisionMeta(actor="bench"), base_revision=0)


async def drive(store: Any, ca_file: Path, count: int, batch: int,
                trace: bool) -> tuple[float, int]:
    from reconciler.incoming.runner import IncomingRunner, RunnerOptions
    from reconciler.incoming.store import IncomingStore

    incoming = IncomingStore.of_store(store)
    options = RunnerOptions(batch=batch, interval_override=0.5, reload_interval_seconds=1.0)
    runner = IncomingRunner(store, incoming, owner=f"bench-{uuid.uuid4().hex[:6]}",
                            ca_file=str(ca_file), options=options)
    stop = asyncio.Event()
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    task = asyncio.create_task(runner.run(stop))
    await runner.wait_for(lambda: sum(loop.processed for loop in runner.loops.values())
                          >= count, timeout=3600)
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] if trace else 0
    if trace:
        tracemalloc.stop()
    stop.set()
    await task
    return elapsed, peak


def child(args: argparse.Namespace) -> None:
    from reconciler.state import open_store

    with DovecotInstance() as dovecot:
        user = dovecot.add_user()
        os.environ[PASSWORD_ENV] = user.password
        dovecot.preload(user, args.one, size=2_000)
        if args.store == "pg":
            context: Any = postgres_url(args.pg, "bench_incoming")
        else:
            context = sqlite_url("bench-incoming")
        with context as url:
            if url is None:
                print(json.dumps({"skipped": True}))
                return
            store = open_store(url)
            try:
                config(store, dovecot, user)
                rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                elapsed, peak = asyncio.run(drive(store, dovecot.ca_file, args.one,
                                                  args.batch, not args.no_tracemalloc))
                events = store.audit.count(status="PROCESSED")
            finally:
                store.close()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"n": args.one, "seconds": elapsed, "events": events,
                          "rss_kib": rss, "rss_before_kib": rss_before, "peak": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,5000", help="mailbox sizes, comma-separated")
    parser.add_argument("--store", choices=("sqlite", "pg"), default="sqlite")
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL URL for --store pg")
    parser.add_argument("--batch", type=int, default=50, help="mails per fetch call")
    parser.add_argument("--no-tracemalloc", action="store_true")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child's size
    args = parser.parse_args()
    if args.one:
        child(args)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"incoming: Dovecot IMAPS mailbox -> runner -> {args.store} store "
          f"(batch {args.batch}, tracemalloc {'off' if args.no_tracemalloc else 'on'})")
    print(f"{'mails':>7} {'seconds':>8} {'mails/s':>8} {'events':>7} {'RSS peak MiB':>13} "
          f"{'tracemalloc peak MiB':>21}")
    for n in sizes:
        cmd = [sys.executable, __file__, "--one", str(n), "--store", args.store, "--pg",
               args.pg, "--batch", str(args.batch)]
        if args.no_tracemalloc:
            cmd.append("--no-tracemalloc")
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"{n:>7} FAILED: {proc.stderr.strip()[-1500:]}")
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        if result.get("skipped"):
            print(f"{n:>7} skipped: PostgreSQL not reachable")
            continue
        rate = result["n"] / result["seconds"]
        traced = (f"{result['peak'] / 2**20:>21.1f}" if result["peak"]
                  else f"{'-':>21}")
        print(f"{n:>7,} {result['seconds']:>8.1f} {rate:>8.0f} {result['events']:>7,} "
              f"{result['rss_kib'] / 1024:>13.1f} {traced}")


if __name__ == "__main__":
    main()
