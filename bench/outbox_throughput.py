"""Outbox throughput on SQLite and PostgreSQL.

Enqueues N notifications one transaction each (as the intake API does: each
is durable before it is acknowledged), then drains them with claim + one
``complete_many`` per batch (the daemon's group commit). Prints messages per
second for both phases; asserts nothing.

    python bench/outbox_throughput.py                       # 10,000 on both databases
    python bench/outbox_throughput.py -n 2000 --audit       # plus one audit row per message
    python bench/outbox_throughput.py --workers 4           # 4 claimers, own connections
    python bench/outbox_throughput.py --pg postgresql://me@db:5432/bench

PostgreSQL runs in a schema of its own that is dropped afterwards; it is
skipped with a note when the server cannot be reached.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager

from _stores import postgres_url, sqlite_url

from reconciler.state import SqlStore, StoreError, open_store
from reconciler.state.base import (
    AuditEntry,
    AuditStatus,
    Completion,
    EnqueueRequest,
    OutboxState,
)

DEFAULT_PG = os.environ.get("RECONCILE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def notification(i: int) -> dict[str, object]:
    return {
        "module": "requests",
        "namespace": "default",
        "context": {"department": "IT", "site": "Berlin", "technicianGroup": "Network"},
        "to": [{"email": f"requester{i}@example.com", "name": f"Requester {i}"}],
        "cc": [{"email": "desk-lead@example.com"}],
        "subject": f"[Request ##RE-{i}##] Your request was updated",
        "textBody": "Hello,\n\nyour request was updated by the technician.\n" * 4,
        "htmlBody": "<p>Hello,</p><p>your request was updated by the technician.</p>" * 4,
        "idempotencyKey": f"request-{i}-update",
    }


def enqueue_all(store: SqlStore, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        store.outbox.enqueue(notification(i), namespace="default",
                             idempotency_key=f"request-{i}-update")
    return time.perf_counter() - start


def enqueue_batched(store: SqlStore, n: int, batch: int) -> float:
    start = time.perf_counter()
    for first in range(0, n, batch):
        store.outbox.enqueue_many([
            EnqueueRequest(notification(i), "batched", f"request-{i}-update")
            for i in range(first, min(first + batch, n))
        ])
    return time.perf_counter() - start


def drain(stores: list[SqlStore], batch: int, audit: bool) -> tuple[float, int]:
    done = [0] * len(stores)
    start_line = threading.Barrier(len(stores))

    def work(k: int) -> None:
        store, owner = stores[k], f"bench-{k}-{uuid.uuid4().hex[:6]}"
        start_line.wait()
        while claimed := store.outbox.claim(owner, batch, lease_seconds=300):
            entries = [AuditEntry(AuditStatus.SENT, "250 2.0.0 OK", server="bench",
                                  recipient=m.payload["to"][0]["email"], outbox_id=m.id,
                                  attempt=m.attempts) for m in claimed] if audit else []
            store.outbox.complete_many(
                owner, [Completion(m.id, OutboxState.SENT) for m in claimed], audit=entries)
            done[k] += len(claimed)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(stores))]
    start = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - start, sum(done)


def run(name: str, url: str, args: argparse.Namespace) -> None:
    with open_store(url) as store:
        enqueue_s = enqueue_all(store, args.n)
        stores = [open_store(url) for _ in range(args.workers)]
        try:
            drain_s, drained = drain(stores, args.batch, args.audit)
        finally:
            for s in stores:
                s.close()
        sent = store.outbox.depth(finished=True)[OutboxState.SENT]
        batched_s = enqueue_batched(store, args.n, args.batch)
    assert drained == args.n == sent, (drained, sent)  # sanity, not a figure
    what = f"claim+complete_many (batch {args.batch}, {args.workers} worker(s)"
    what += ", +1 audit row each)" if args.audit else ")"
    rows = [
        ("enqueue (1 transaction each)", args.n / enqueue_s, enqueue_s),
        (what, drained / drain_s, drain_s),
        (f"enqueue_many ({args.batch} per transaction)", args.n / batched_s, batched_s),
    ]
    for i, (label, rate, seconds) in enumerate(rows):
        print(f"{name if i == 0 else '':<11} {label:<66} {rate:>9,.0f} msg/s  ({seconds:.2f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="messages (default 10,000)")
    parser.add_argument("--batch", type=int, default=100, help="claim batch size (default 100)")
    parser.add_argument("--workers", type=int, default=1, help="concurrent claimers")
    parser.add_argument("--audit", action="store_true",
                        help="write one audit row per message in the completing transaction")
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL URL (a schema is made)")
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    args = parser.parse_args(argv)

    targets: list[tuple[str, Callable[[], AbstractContextManager[str | None]]]] = []
    if args.only != "postgresql":
        targets.append(("sqlite", lambda: sqlite_url("outbox-bench")))
    if args.only != "sqlite":
        targets.append(("postgresql", lambda: postgres_url(args.pg, "outbox_bench")))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, N={args.n:,}")
    for name, make in targets:
        with make() as url:
            if url is None:
                continue
            try:
                run(name, url, args)
            except StoreError as exc:
                print(f"{name:<11} failed: {exc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
