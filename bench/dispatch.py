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
  pointing at the sink, fed by K concurrent HTTP clients posting
  ``/v1/notifications`` with a bearer token (bench/_httpfeed.py: a light
  asyncio HTTP/1.1 client by default, ``--client httpx`` for
  ``httpx.AsyncClient``). Accepted = the HTTP response, given only after the
  outbox commit.

Printed per system: msg/s from the first acknowledgement to the last
delivery, delivery latency (acknowledged -> arrived at the sink) p50/p99,
intake latency (request or SMTP transaction sent -> acknowledged) p50/p99,
lost (acknowledged but never delivered), CPU ms per message of the system's
own processes (Postfix: master and all its daemons; reconciler: the daemon
process, not PostgreSQL), and the reconciler/Postfix msg/s ratio. Each system
first gets a short warm-up (``--warmup``) that is delivered and left out of
the figures, so process start-up and first connections are not counted.
The issue's target: at least 2x Postfix's msg/s, nothing lost, intake p99
under 5 ms.

    python bench/dispatch.py                        # N=2000, both systems, SQLite + PostgreSQL
    python bench/dispatch.py --only postfix -n 5000
    python bench/dispatch.py --only reconciler --store sqlite --concurrency 32
    python bench/dispatch.py --repeat 3             # 3 interleaved rounds, median run tabled
    python bench/dispatch.py --profile              # py-spy the daemon (pip install py-spy)
    python bench/dispatch.py --daemon-arg=--log-level=warning
    python bench/dispatch.py --workers 0 --workers 1   # one process vs intake + 1 worker
    python bench/dispatch.py --workers 0 --workers auto # one process vs the default layout

The machine has two cores: whatever else runs shows in the figures, so
before every run the share of CPU used by other processes is measured and a
busy machine is reported under the table. ``BENCH_DAEMON_PYTHON`` runs the
daemon with another interpreter (see bench/_daemon.py); ``BENCH_KEEP_POSTFIX``
/ ``BENCH_KEEP_DAEMON`` keep the temp directories (config, queue, daemon log).

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
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from _cpu import tree_cpu
from _postfix import PostfixInstance, free_port
from _sink import Sink, bench_id
from _smtpfeed import feed
from _stats import RunResult, median_runs, table

DEFAULT_N = 2000
DEFAULT_CONCURRENCY = 16
DEFAULT_WARMUP = 50
DEFAULT_TIMEOUT_S = 300.0
BUSY_SHARE = 0.15
BUSY_NOTE = "machine busy"
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


def _cpu_times() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def busy_share(seconds: float = 1.0) -> float | None:
    """Share of all CPUs busy over ``seconds`` while nothing of ours runs."""
    try:
        busy0, total0 = _cpu_times()
        time.sleep(seconds)
        busy1, total1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    return (busy1 - busy0) / max(1, total1 - total0)


def measured(system: str, n: int, run: Callable[[], RunResult]) -> RunResult:
    # Two cores: anything else running (a test suite, another bench) shows in the figures.
    before = busy_share()
    try:
        result = run()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        # One system failing to start must not hide the other's figures.
        log(f"{system}: failed: {exc}")
        result = RunResult(system, n, errors=[f"run failed: {str(exc).splitlines()[0]}"])
    if before is not None and before > BUSY_SHARE:
        result.busy = before
        result.notes.append(f"{BUSY_NOTE}: {100 * before:.0f}% of the CPUs were in use by "
                            "other processes just before this run")
    return result


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
        master = postfix.master_pid()
        cpu_before = tree_cpu(master) if master else 0.0
        fed = asyncio.run(feed("127.0.0.1", postfix.port, ids, concurrency))
        wait_for(lambda: sink.delivered - base, len(fed.accepted), deadline, "postfix")
        cpu = tree_cpu(master) - cpu_before if master else None
        left = postfix.queue_count()
        arrivals = sink.stop()
    measured = {k: v for k, v in arrivals.first.items() if k.startswith(f"bid-{run}-")}
    result = RunResult.measure("postfix", n, fed.started, fed.accepted, measured)
    result.errors = fed.errors
    result.cpu_s = cpu
    if left:
        result.notes.append(f"{left} still in Postfix's queue when it stopped")
    return result


def system_name(store: str, workers: str | None) -> str:
    return f"reconciler/{store}" + (f" w={workers}" if workers is not None else "")


def run_reconciler(store: str, workers: str | None, args: argparse.Namespace) -> RunResult:
    from _daemon import run_daemon_bench

    # None: the daemon's default layout (`--workers auto`).
    extra = ("--workers", workers) if workers is not None else ()
    return run_daemon_bench(store, n=args.n, concurrency=args.concurrency, warmup=args.warmup,
                            timeout_s=args.timeout, profile=args.profile, log=log,
                            wait_for=wait_for, max_concurrency=args.server_concurrency,
                            client=args.client, daemon_args=(*args.daemon_arg, *extra),
                            label=system_name(store, workers))


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt once; later ones wait for the clean-up.

    A handler of our own also keeps asyncio.run from turning Ctrl-C into a task
    cancellation, which ``gather(return_exceptions=True)`` would swallow and the
    benchmark would go on. Repeats are ignored so that a second Ctrl-C cannot
    cut short the ``finally`` blocks that stop Postfix and the daemon.
    """
    interrupted = False

    def handler(signum: int, frame: object) -> None:
        nonlocal interrupted
        if interrupted:
            log("stopping what was started; one moment")
            return
        interrupted = True
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


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
                        help="profile the daemon during the measured phase: py-spy (default; "
                        "GIL samples by area and function, flame graph SVG) or cprofile "
                        "(python -m cProfile, main thread only); output paths are printed")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of every system; the median run per system is "
                        "tabled (default 1)")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw",
                        help="HTTP load generator: raw asyncio HTTP/1.1 (light, default) or "
                        "httpx.AsyncClient")
    parser.add_argument("--server-concurrency", type=int, default=16,
                        help="the bench OutgoingServer's maxConcurrency (default 16, "
                        "Postfix's smtp_destination_concurrency_limit is 20)")
    parser.add_argument("--workers", action="append", metavar="N|auto",
                        help="run the daemon as `reconcile daemon --workers N` (one intake + N "
                        "worker processes); repeatable to compare in one run, 0 = one "
                        "process (default: the daemon's default layout only, shown as "
                        "'reconciler/STORE'). Shown as 'reconciler/STORE w=N'")
    parser.add_argument("--daemon-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for `reconcile daemon` (repeatable), "
                        "e.g. --daemon-arg=--log-level=warning")
    args = parser.parse_args(argv)
    if min(args.n, args.concurrency, args.repeat) < 1:
        parser.error("--n, --concurrency and --repeat must be at least 1")

    results: list[RunResult] = []
    stores = ("sqlite", "postgresql") if args.store == "both" else (args.store,)
    with terminate_as_interrupt():
        try:
            # Rounds interleave the systems, so a neighbour's load hits them alike.
            for round_no in range(1, args.repeat + 1):
                if args.repeat > 1:
                    log(f"round {round_no} of {args.repeat}")
                if args.only in (None, "postfix"):
                    results.append(measured("postfix", args.n, lambda: run_postfix(
                        args.n, args.concurrency, args.warmup, args.timeout)))
                    log(table(results[-1:]))
                if args.only in (None, "reconciler"):
                    for store in stores:
                        for workers in args.workers or [None]:
                            results.append(measured(
                                system_name(store, workers), args.n,
                                lambda store=store, workers=workers: run_reconciler(
                                    store, workers, args)))
                            log(table(results[-1:]))
        except KeyboardInterrupt:
            log("interrupted: everything started was stopped")
            return 130
    print()
    print(f"dispatch benchmark: {args.n} messages of 4 KB, concurrency {args.concurrency}, "
          f"{os.cpu_count()} CPUs, all on 127.0.0.1")
    if args.repeat > 1:
        print(f"every run ({args.repeat} rounds):")
        print(table(results))
        print("\nmedian run per system:")
    medians = median_runs(results)
    print(table(medians))
    for r in medians:
        for note in r.notes:
            if not note.startswith(BUSY_NOTE):
                print(f"  {r.system}: {note}")
    busy = [r for r in results if any(n.startswith(BUSY_NOTE) for n in r.notes)]
    if busy:
        print(f"  {BUSY_NOTE} before {len(busy)} of {len(results)} runs (other processes used "
              f"up to {100 * max(r.busy for r in busy):.0f}% of the CPUs): figures are noisy")
    for r in results:
        for error in r.errors[:5]:
            print(f"  {r.system}: error: {error}")
        if len(r.errors) > 5:
            print(f"  {r.system}: ... {len(r.errors) - 5} more errors")
    return 0

if __name__ == "__main__":
    sys.exit(main())
