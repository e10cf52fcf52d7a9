"""Dispatch throughput: the reconcile daemon next to Postfix, on loopback.

N messages of 4 KB are accepted, routed and delivered to a recording SMTP
sink on 127.0.0.1 (bench/_sink.py: arrival time per benchmark id), durably:

- **postfix**: a private Postfix instance (bench/_postfix.py: own config,
  queue and data directories in a temp dir on the normal disk, a free
  loopback port, ``relayhost = [127.0.0.1]:SINK``) fed over K SMTP sessions
  (bench/_smtpfeed.py). Accepted = the 250 after DATA, when cleanup has
  fsynced the queue file.
- **reconciler/STORE**: ``reconcile daemon`` on a fresh SQLite file or a fresh
  PostgreSQL schema, one OutgoingServer (security none, no auth, primary)
  pointing at the sink, fed by K concurrent httpx clients posting
  ``/v1/notifications`` with a bearer token. Accepted = the HTTP response,
  given only after the outbox commit.

Printed per system: msg/s from the first acceptance to the last delivery,
delivery latency (acceptance -> arrival at the sink) p50/p99, intake latency
(request or SMTP transaction sent -> acknowledged) p50/p99, lost (acknowledged
but never delivered), and the reconciler/Postfix msg/s ratio. Each system
first gets a short warm-up (``--warmup``) that is delivered and left out of
the figures, so process start-up and first connections are not counted.

    python bench/dispatch.py                        # N=2000, both systems, SQLite + PostgreSQL
    python bench/dispatch.py --only postfix -n 5000
    python bench/dispatch.py --only reconciler --store sqlite --concurrency 32
    python bench/dispatch.py --profile              # py-spy the daemon (pip install py-spy)

Everything runs on 127.0.0.1, is bounded by ``--timeout`` per system and stops
by itself; Postfix is stopped (and its temp dir removed) on errors and Ctrl-C.
Needs root (Postfix drops to the postfix user) and the Debian package postfix.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator

from _postfix import PostfixInstance, free_port
from _sink import Sink, bench_id
from _smtpfeed import feed
from _stats import RunResult, table

DEFAULT_N = 2000
DEFAULT_CONCURRENCY = 16
DEFAULT_WARMUP = 50
DEFAULT_TIMEOUT_S = 300.0
STALL_S = 30.0  # no delivery progress for this long: stop waiting, count the rest lost


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def wait_for(count: Callable[[], int], target: int, deadline: float,
              what: str) -> int:
    """Poll ``count()`` until it reaches ``target``, stalls, or the deadline passes."""
    last, last_change = count(), time.monotonic()
    while last < target:
        now = time.monotonic()
        if now > deadline:
            log(f"  {what}: deadline reached at {last}/{target}")
            break
        if now - last_change > STALL_S:
            log(f"  {what}: no progress for {STALL_S:.0f} s at {last}/{target}")
            break
        time.sleep(0.01)
        current = count()
        if current != last:
            last, last_change = current, time.monotonic()
    return last


def run_postfix(n: int, concurrency: int, warmup: int, timeout_s: float) -> RunResult:
    run = uuid.uuid4().hex[:8]
    deadline = time.monotonic() + timeout_s
    with Sink(free_port()) as sink, PostfixInstance(sink.port) as postfix:
        log(f"postfix: instance in {postfix.root}, smtpd on 127.0.0.1:{postfix.port}, "
            f"sink on :{sink.port}")
        if warmup:
            warm = asyncio.run(feed("127.0.0.1", postfix.port,
                                    [bench_id(f"w{run}", i) for i in range(warmup)],
                                    min(concurrency, warmup)))
            wait_for(lambda: sink.delivered, len(warm.accepted), deadline, "postfix warm-up")
        base = sink.delivered
        ids = [bench_id(run, i) for i in range(n)]
        log(f"postfix: feeding {n} x 4 KB over {concurrency} SMTP sessions")
        fed = asyncio.run(feed("127.0.0.1", postfix.port, ids, concurrency))
        wait_for(lambda: sink.delivered - base, len(fed.accepted), deadline, "postfix")
        left = postfix.queue_count()
        arrivals = sink.stop()
    measured = {k: v for k, v in arrivals.first.items() if k.startswith(f"bid-{run}-")}
    result = RunResult.measure("postfix", n, fed.started, fed.accepted, measured)
    result.errors = fed.errors
    if left:
        result.notes.append(f"{left} still in Postfix's queue when it stopped")
    return result


def run_reconciler(store: str, n: int, concurrency: int, warmup: int, timeout_s: float,
                   profile: str | None) -> RunResult:
    from _daemon import run_daemon_bench

    return run_daemon_bench(store, n=n, concurrency=concurrency, warmup=warmup,
                            timeout_s=timeout_s, profile=profile, log=log, wait_for=wait_for)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    # SIGTERM takes the same path as Ctrl-C, so every `finally` stops its Postfix/daemon.
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--n", type=int, default=DEFAULT_N,
                        help=f"messages per system (default {DEFAULT_N})")
    parser.add_argument("-c", "--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                        help="concurrent SMTP sessions / HTTP clients "
                        f"(default {DEFAULT_CONCURRENCY})")
    parser.add_argument("--store", choices=("sqlite", "postgresql", "both"), default="both",
                        help="store(s) the daemon runs on (default both)")
    parser.add_argument("--only", choices=("postfix", "reconciler"),
                        help="run one system only")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP,
                        help=f"unmeasured messages sent first (default {DEFAULT_WARMUP})")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help=f"seconds allowed per system (default {DEFAULT_TIMEOUT_S:.0f})")
    parser.add_argument("--profile", nargs="?", const="py-spy", choices=("py-spy", "cprofile"),
                        help="profile the daemon: py-spy (flame graph SVG + top) or "
                        "cprofile (RECONCILE_BENCH_CPROFILE); output paths are printed")
    args = parser.parse_args(argv)
    if args.n < 1 or args.concurrency < 1:
        parser.error("--n and --concurrency must be at least 1")

    results: list[RunResult] = []
    with terminate_as_interrupt():
        try:
            if args.only in (None, "postfix"):
                results.append(run_postfix(args.n, args.concurrency, args.warmup,
                                           args.timeout))
                log(table(results[-1:]))
            if args.only in (None, "reconciler"):
                stores = ("sqlite", "postgresql") if args.store == "both" else (args.store,)
                for store in stores:
                    results.append(run_reconciler(store, args.n, args.concurrency,
                                                  args.warmup, args.timeout, args.profile))
                    log(table(results[-1:]))
        except KeyboardInterrupt:
            log("interrupted: everything started was stopped")
            return 130
    print()
    print(f"dispatch benchmark: {args.n} messages of 4 KB, concurrency {args.concurrency}, "
          f"{os.cpu_count()} CPUs, all on 127.0.0.1")
    print(table(results))
    for r in results:
        for note in r.notes:
            print(f"  {r.system}: {note}")
        for error in r.errors[:5]:
            print(f"  {r.system}: error: {error}")
        if len(r.errors) > 5:
            print(f"  {r.system}: ... {len(r.errors) - 5} more errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
