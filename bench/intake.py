"""Intake API latency and throughput on SQLite and PostgreSQL.

Starts the daemon's API (``reconciler.daemon.api.factory.create_api``) with uvicorn on
127.0.0.1 in a child process, posts N notifications of about 4 KB with K
concurrent clients (one ``httpx.AsyncClient`` connection each), and prints
requests per second and latency p50/p95/p99 in ms (request sent -> 202
received; every 202 is a committed row). Also prints how many submissions
each group commit stored on average and the server's CPU time per request
(which, unlike latency, means something on a busy machine). Asserts nothing.

    python bench/intake.py                        # N=2,000, K=1,8,32, both stores
    python bench/intake.py -k 16 -n 5000 --only sqlite
    python bench/intake.py --compare              # also without group commit
    python bench/intake.py --window 0.001         # hold a batch open for 1 ms
    python bench/intake.py --pg postgresql://me@db:5432/bench

PostgreSQL runs in a schema of its own that is dropped afterwards; it is
skipped with a note when the server cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from _stores import postgres_url, sqlite_url

from reconciler.daemon.intake import MAX_BATCH

DEFAULT_PG = os.environ.get("RECONCILE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
TOKEN_ENV = "RECONCILE_BENCH_API_TOKEN"
TOKEN = "bench-intake-token-" + uuid.uuid4().hex
WARMUP = 50


# -- the server side (child process) ----------------------------------------------------


def serve(url: str, window: float, max_batch: int, concurrency: int | None) -> None:
    """Child: open the store, configure one namespace, serve the API; print the port."""
    import uvicorn

    from reconciler.config.desired import CanonicalResource, ResourceKey
    from reconciler.daemon.api.factory import create_api
    from reconciler.runtime.live_config import ConfigHolder
    from reconciler.runtime.metrics import DaemonMetrics
    from reconciler.runtime.settings import DaemonSettings
    from reconciler.state import Action, Change, RevisionMeta, open_store

    store = open_store(url)
    if store.head() == 0:
        spec = {"email": "desk@desk.example", "replyTo": "support@desk.example",
                "host": "smtp.desk.example", "port": 587, "security": "starttls",
                "primary": True}
        server = CanonicalResource.build(ResourceKey("OutgoingServer", "default", "main"),
                                         "reconciler.dev/v1", spec, None)
        store.commit([Change(Action.CREATE, server.key, None, server)],
                     RevisionMeta(actor="bench"), base_revision=0)
    config = ConfigHolder()
    config.refresh(store)
    settings = DaemonSettings(store_url=url, api_tokens=(f"env:{TOKEN_ENV}",))
    app = create_api(store, settings, DaemonMetrics(), config, intake_window=window,
                     intake_max_batch=max_batch,
                     intake_concurrency=(concurrency or 1) if max_batch > 1 else 64)
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on connections of a
    # listener whose proto says TCP; without it Nagle and delayed ACKs add ~40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(
        sockets=[sock])


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process so far (Linux); None elsewhere.

    Load-independent, unlike latency: on a busy machine it still says what
    one request costs the server.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    url: str
    pid: int


@contextmanager
def server_process(url: str, window: float, max_batch: int,
                   concurrency: int | None = None) -> Iterator[Server]:
    env = {**os.environ, TOKEN_ENV: TOKEN}
    extra = ["--intake-concurrency", str(concurrency)] if concurrency else []
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", url, "--window", str(window),
         "--max-batch", str(max_batch), *extra],
        stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield Server(base, child.pid)
    finally:
        child.terminate()
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


# -- the load (parent) -------------------------------------------------------------------


def body(run: str, i: int, size: int) -> dict[str, Any]:
    base: dict[str, Any] = {
        "module": "requests",
        "context": {"department": "IT", "site": "Berlin", "technicianGroup": "Network"},
        "to": [f"Requester {i} <requester{i}@example.com>"],
        "cc": ["desk-lead@example.com"],
        "subject": f"[Request ##RE-{i}##] Your request was updated",
        "idempotencyKey": f"{run}-{i}",
    }
    base["textBody"] = base["htmlBody"] = ""
    # fill to `size` bytes of JSON, half in the text body and half in the HTML body
    room = max(0, size - len(json.dumps(base)))
    text = "Hello, your request was updated by the technician. "
    base["textBody"] = (text * (room // len(text) + 1))[: room // 2]
    base["htmlBody"] = ("<p>" + text * (room // len(text) + 1))[: room - room // 2]
    return base


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


@dataclass
class LoadResult:
    seconds: float
    latencies_ms: list[float]
    failures: int


async def load(base: str, run: str, n: int, clients: int, size: int) -> LoadResult:
    bodies = [body(run, i, size) for i in range(n)]
    latencies: list[float] = []
    failures = 0
    next_index = 0

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal next_index, failures
        while next_index < n:
            index = next_index
            next_index += 1
            started = time.perf_counter()
            response = await client.post("/v1/notifications", json=bodies[index])
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 202:
                failures += 1

    headers = {"Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    pool = [httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60)
            for _ in range(clients)]
    try:
        for client in pool:  # connect and warm up outside the measurement
            for i in range(max(1, WARMUP // clients)):
                await client.post("/v1/notifications", json=body(f"warm-{run}", i, size))
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(c) for c in pool))
        seconds = time.perf_counter() - started
    finally:
        for client in pool:
            await client.aclose()
    return LoadResult(seconds, latencies, failures)


def intake_stats(base: str) -> dict[str, Any]:
    response = httpx.get(f"{base}/v1/status", headers={"Authorization": f"Bearer {TOKEN}"})
    return dict(response.json()["intake"])


def run_store(name: str, url: str, args: argparse.Namespace) -> None:
    modes = [("group commit", MAX_BATCH)]
    if args.compare:
        modes.append(("1 txn/request", 1))
    for mode, max_batch in modes:
        with server_process(url, args.window, max_batch, args.intake_concurrency) as server:
            for clients in args.k:
                before, cpu_before = intake_stats(server.url), cpu_seconds(server.pid)
                result = asyncio.run(load(server.url, uuid.uuid4().hex[:8], args.n, clients,
                                          args.size))
                after, cpu_after = intake_stats(server.url), cpu_seconds(server.pid)
                batches = after["batches"] - before["batches"]
                stored = after["messages"] - before["messages"]
                cpu = ("    -   " if cpu_before is None or cpu_after is None else
                       f"{(cpu_after - cpu_before) / args.n * 1000:5.2f} ms")
                lat = result.latencies_ms
                print(f"{name:<11} {mode:<14} K={clients:<3} "
                      f"{args.n / result.seconds:>7,.0f} req/s   "
                      f"p50 {percentile(lat, 50):6.2f}  p95 {percentile(lat, 95):6.2f}  "
                      f"p99 {percentile(lat, 99):6.2f}  max {max(lat):7.2f} ms   "
                      f"{stored / max(batches, 1):5.1f}/commit  server CPU {cpu}/req"
                      + (f"   {result.failures} FAILED" if result.failures else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2_000, help="notifications per run (2,000)")
    parser.add_argument("-k", type=int, action="append",
                        help="concurrent clients (repeatable; default 1, 8, 32)")
    parser.add_argument("--size", type=int, default=4096, help="body bytes (about; 4096)")
    parser.add_argument("--window", type=float, default=0.0,
                        help="group commit window in seconds (default 0: adaptive only)")
    parser.add_argument("--intake-concurrency", type=int, default=None,
                        help="intake transactions in flight (default 1)")
    parser.add_argument("--compare", action="store_true",
                        help="also run with one transaction per request")
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL URL (a schema is made)")
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument("--serve", metavar="STORE_URL", help=argparse.SUPPRESS)
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.window, args.max_batch, args.intake_concurrency)
        return 0
    args.k = args.k or [1, 8, 32]

    import uvicorn

    targets: list[tuple[str, Callable[[], AbstractContextManager[str | None]]]] = []
    if args.only != "postgresql":
        targets.append(("sqlite", lambda: sqlite_url("intake-bench")))
    if args.only != "sqlite":
        targets.append(("postgresql", lambda: postgres_url(args.pg, "intake_bench")))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, uvicorn "
          f"{uvicorn.__version__}, N={args.n:,} of ~{args.size:,} bytes, "
          f"window {args.window * 1000:g} ms; client and server share this machine")
    for name, make in targets:
        with make() as url:
            if url is not None:
                run_store(name, url, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
