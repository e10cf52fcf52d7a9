"""A surge of notifications through Microsoft Graph: is it throttle-bound or backoff-bound?

The seeds warn that a surge sent through Graph waits minutes, because Graph allows
only 4 concurrent requests per mailbox. The best any sender can do is keep those 4
slots busy: N notifications with a service time S per request take at least
N x S / 4. This benchmark measures how close the daemon gets.

One run: a fresh store (SQLite file or PostgreSQL schema), one OutgoingServer with
protocol graph applied with ``reconcile apply``, the local Graph of the tests
(tests/peers/graph_server.py, HTTPS with a throw-away CA) answering each request
after ``--service-ms``, and the daemon itself (intake API, outbox, worker,
Graph transport) run in this process with a fixed token. N notifications of about
4 KB are posted to ``/v1/notifications`` by the light HTTP client of
bench/_httpfeed.py.

Two modes. The default is Graph's throttle: the peer allows ``--slots`` requests in
flight per mailbox and answers any request beyond them at once with 429
``ApplicationThrottled`` and ``Retry-After: --retry-after``; a perfect client never
draws one and reaches the minimum itself. ``--throttle-every N`` (stress) also answers
every Nth mail request with that 429, so the client must wait out Retry-After and still
keep the other slots busy.

Printed: the time from the first acknowledged notification to the last one Graph
accepted, the theoretical minimum N x S / slots and their ratio, the least time any
client that honours the injected ``Retry-After`` can take (a simulation: the message
that draws the last 429 waits it out after nearly everything else was sent, so with 429s
the issue's 1.1x is out of reach by construction for small N), enqueue -> accepted
latency p50/p99, how long intake took to acknowledge them all, the daemon's CPU per
message (every thread of this process but the posting client's), the 429s waited out,
the most requests Graph saw in flight, how many notifications failed or never arrived,
and the load average (the machine may be shared). Issue 15's target: within 1.03x of
the minimum with nothing failed, at most 2 ms of the daemon's CPU per message.

    python bench/graph_surge.py                        # 600 messages, 50 ms, 4 slots
    python bench/graph_surge.py --throttle-every 50    # and a 429 on every 50th request
    python bench/graph_surge.py -n 1200 --store postgresql
    python bench/graph_surge.py --transport-only       # the Graph transport's CPU alone

Everything runs on 127.0.0.1, is bounded by ``--timeout`` and stops by itself.
The Graph peer runs in a child process (Graph's CPU is not the daemon's); the daemon
runs in this one, in a thread with its own event loop (uvloop when installed, as
``reconcile daemon`` runs). Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import logging
import multiprocessing
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from _cpu import process_cpu
from _daemon import fresh_store, reconcile_command
from _graph_bare import bare_surge
from _httpfeed import NAMESPACE, notification_4k, post_all_raw
from _postfix import free_port
from _sink import bench_id
from _stats import percentile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from peers.graph_server import TOKEN, GraphPeer
from peers.smtp import PeerCerts

from reconciler.config.endpoints import url_host_endpoint
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.credentials import gate
from reconciler.daemon.app import Daemon, loop_factory
from reconciler.dispatch.compose import compose
from reconciler.dispatch.filters import filter_notification
from reconciler.mail.envelope import Envelope, Notification
from reconciler.mail.graph.transport import GraphTransport
from reconciler.mail.outcome import Outcome
from reconciler.runtime.settings import DaemonSettings

MAILBOX = "desk@bench.example"
API_TOKEN_ENV = "RECONCILE_BENCH_API_TOKEN"
STALL_S = 30.0

CONFIG = """\
# Written by bench/graph_surge.py: one Graph server, the local Graph, for every message.
apiVersion: reconciler.dev/v1
kind: OutgoingServer
metadata:
  name: graph
  namespace: {namespace}
spec:
  email: {mailbox}
  senderName: Bench Desk
  replyTo: {mailbox}
  protocol: graph
  graphEndpoint: {endpoint}
  mailbox: {mailbox}
  primary: true
  maxConcurrency: {slots}
  timeoutSeconds: 60
  auth:
    type: oauth2
    provider: microsoft
    grant: clientCredentials
    clientId: 11111111-2222-3333-4444-555555555555
    tenant: bench.example
    clientSecret: {{secretRef: env:BENCH_GRAPH_CLIENT_SECRET}}
"""


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def apply_config(store_url: str, endpoint: str, slots: int, tmp: Path) -> None:
    config = tmp / "config"
    config.mkdir()
    (config / "graph.yaml").write_text(CONFIG.format(namespace=NAMESPACE, mailbox=MAILBOX,
                                                     endpoint=endpoint, slots=slots))
    done = subprocess.run([*reconcile_command(), "apply", str(config), "--store", store_url,
                           "--yes"], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"reconcile apply failed:\n{done.stdout}\n{done.stderr}")


class InProcessDaemon:
    """The daemon on its own event loop in a thread; the Graph transport gets a fixed token
    (no identity provider in this benchmark)."""

    def __init__(self, store_url: str, ca_file: Path, api_token: str) -> None:
        os.environ[API_TOKEN_ENV] = api_token
        self.port = free_port()
        settings = DaemonSettings(store_url=store_url, listen_port=self.port,
                                  api_tokens=(f"env:{API_TOKEN_ENV}",),
                                  worker_id=f"bench-{uuid.uuid4().hex[:8]}",
                                  health_interval_seconds=3600.0)
        self.transport = GraphTransport(ca_file=ca_file, token_provider=lambda _s: TOKEN)
        self.daemon = Daemon(settings, transports={"graph": self.transport}, health=False,
                             handle_signals=False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="daemon", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await self.daemon.run(self._stop)

        try:
            with asyncio.Runner(loop_factory=loop_factory()) as runner:
                runner.run(main())
        except BaseException as exc:  # reported by start/stop
            self._error = exc

    def start(self, timeout: float = 60.0) -> InProcessDaemon:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while True:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"the daemon did not start: {self._error}")
            if time.monotonic() > deadline:
                raise RuntimeError("the daemon did not start in time")
            if self.daemon.ready.is_set():  # parts started; the API may not listen yet
                with contextlib.suppress(OSError), \
                        urllib.request.urlopen(f"{self.base_url}/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        return self
            time.sleep(0.05)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        if self._error is not None:
            log(f"daemon ended with an error: {self._error}")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class PeerProcess:
    """The local Graph in a child process (Graph is another machine, after all: its CPU
    must not come out of the daemon's interpreter). Asked over a pipe for what it saw."""

    def __init__(self, certs: PeerCerts, **kwargs: Any) -> None:
        context = multiprocessing.get_context("fork")
        self._conn, child = context.Pipe()
        self._proc = context.Process(target=_serve_peer, args=(child, certs, kwargs),
                                     daemon=True)

    def start(self) -> PeerProcess:
        self._proc.start()
        self.endpoint = str(self._ask("endpoint"))
        return self

    def _ask(self, what: str) -> Any:
        self._conn.send(what)
        if not self._conn.poll(60):
            raise RuntimeError("the Graph peer process does not answer")
        return self._conn.recv()

    def seen(self) -> tuple[dict[str, float], dict[int, int], int]:
        """Bench id -> time accepted (CLOCK_MONOTONIC, shared by processes), answers by
        status, most requests in flight for the mailbox."""
        return self._ask("seen")  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self._proc.is_alive():
            with contextlib.suppress(OSError, RuntimeError):
                self._ask("stop")
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()


def _serve_peer(conn: Any, certs: PeerCerts, kwargs: dict[str, Any]) -> None:
    peer = GraphPeer(certs, **kwargs).start()
    try:
        while True:
            what = conn.recv()
            if what == "endpoint":
                conn.send(peer.endpoint)
            elif what == "seen":
                arrived = {m.header("X-Bench-Id"): m.at for m in list(peer.sent)}
                conn.send(({k: v for k, v in arrived.items() if k is not None},
                           peer.status_counts(), max(peer.max_in_flight.values(), default=0)))
            else:
                conn.send("bye")
                return
    finally:
        peer.stop()


def failed_count(store_url: str) -> int:
    from reconciler.state import open_store

    with open_store(store_url) as store:
        return len(store.audit.search(status="SEND_FAILED", namespace=NAMESPACE, limit=None))


def composed(args: argparse.Namespace, endpoint: str) -> tuple[OutgoingServer, list[Envelope]]:
    """The bench's server and -n + 1 composed messages, as the daemon would send them."""
    import yaml

    server = OutgoingServer.model_validate(yaml.safe_load(CONFIG.format(
        namespace=NAMESPACE, mailbox=MAILBOX, endpoint=endpoint, slots=args.slots)))
    notifications = [Notification.model_validate(notification_4k(f"t{i}"))
                     for i in range(args.n + 1)]
    return server, [compose(n, server, filter_notification(n, None)) for n in notifications]


def bare_floor(args: argparse.Namespace, certs: PeerCerts) -> str:
    """--bare: the same messages from a bare client (bench/_graph_bare.py) to a fresh peer
    of the same kind, after the daemon's run: what is left is the peer's and the machine's."""
    peer = PeerProcess(certs, mailboxes=(MAILBOX,), max_concurrent=args.slots,
                       service_time=args.service_ms / 1000, retry_after=args.retry_after).start()
    try:
        server, envelopes = composed(args, peer.endpoint)
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            took, cpu = runner.run(bare_surge(server, envelopes[1:], TOKEN, certs.ca_file))
    finally:
        peer.stop()
    minimum = args.n * args.service_ms / 1000 / args.slots
    return (f"  bare client     {took:.2f} s = {took / minimum:.3f}x of the minimum (the same "
            f"messages, no daemon, {cpu * 1000:.2f} ms CPU per request; the floor here now)")


def transport_cpu(args: argparse.Namespace, ca_file: Path, endpoint: str) -> float:
    """--transport-only: CPU seconds per send of the Graph transport alone (no daemon, no
    store): -n composed messages, a worker's lane of them at a time."""
    server, envelopes = composed(args, endpoint)
    # No store here: the token may go to this endpoint, as an apply would have bound it.
    gate.install(gate.Bindings(frozenset({(gate.client_of(server.spec.auth),
                                           url_host_endpoint(endpoint))})))

    async def main() -> float:
        transport = GraphTransport(ca_file=ca_file, token_provider=lambda _s: TOKEN)
        lane = asyncio.Semaphore(transport.lane_width(server))

        async def send(envelope: Any) -> None:
            async with lane:
                result = await transport.send(envelope, server)
            if result.outcome != Outcome.SENT:
                raise RuntimeError(result.detail)

        await send(envelopes[0])  # the connection and every first-use cost
        start = time.process_time()
        await asyncio.gather(*(send(e) for e in envelopes[1:]))
        spent = time.process_time() - start
        await transport.aclose()
        return spent / args.n

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main())


def run(args: argparse.Namespace) -> int:
    run_id = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="bench-graph-"))
    os.environ.setdefault("BENCH_GRAPH_CLIENT_SECRET", secrets.token_urlsafe(16))
    service = args.service_ms / 1000
    try:
        certs = PeerCerts.create(tmp)
        peer = PeerProcess(certs, mailboxes=(MAILBOX,), max_concurrent=args.slots,
                           service_time=service, retry_after=args.retry_after,
                           throttle_every=args.throttle_every).start()
        if args.transport_only:
            try:
                cpu = transport_cpu(args, certs.ca_file, peer.endpoint)
            finally:
                peer.stop()
            print(f"graph transport alone: {cpu * 1000:.3f} ms CPU per send ({args.n} sends, "
                  f"{mode(args)}); load average {os.getloadavg()[0]:.2f}")
            return 0
        try:
            with fresh_store(args.store, tmp, log) as store_url:
                apply_config(store_url, peer.endpoint, args.slots, tmp)
                daemon = InProcessDaemon(store_url, certs.ca_file,
                                         secrets.token_urlsafe(32)).start()
                try:
                    ids = [bench_id(run_id, i) for i in range(args.n)]
                    log(f"posting {args.n} notifications to {daemon.base_url}; Graph on "
                        f"{peer.endpoint}: {mode(args)}")
                    token = os.environ[API_TOKEN_ENV]
                    cpu = Cpu()
                    fed = asyncio.run(post_all_raw(daemon.base_url, token, ids,
                                                   args.concurrency))
                    arrived = wait_for_arrivals(peer, fed.accepted, args.timeout)
                    daemon_cpu = cpu.daemon_seconds()
                    failed = failed_count(store_url)
                    _, statuses, most = peer.seen()
                finally:
                    daemon.stop()
        finally:
            peer.stop()
        floor = bare_floor(args, certs) if args.bare else ""
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(args, fed.accepted, arrived, failed, statuses, most, fed.errors, daemon_cpu)
    if floor:
        print(floor)
    return 0


class Cpu:
    """CPU seconds of this process apart from the main thread (which posts and polls):
    the daemon's threads, its store threads included."""

    def __init__(self) -> None:
        self._process = process_cpu(os.getpid())
        self._main = time.thread_time()

    def daemon_seconds(self) -> float:
        return (process_cpu(os.getpid()) - self._process) - (time.thread_time() - self._main)


def wait_for_arrivals(peer: PeerProcess, accepted: dict[str, float],
                      timeout: float) -> dict[str, float]:
    """Bench id -> time Graph accepted it, once every acknowledged one arrived (or stalls)."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while True:
        arrived, _, _ = peer.seen()
        count = sum(1 for bid in accepted if bid in arrived)
        now = time.monotonic()
        if count != last:
            last, last_change = count, now
        if count >= len(accepted) or now > deadline or now - last_change > STALL_S:
            return arrived
        time.sleep(0.05)


def ideal_completion(n: int, service: float, slots: int, every: int,
                     retry_after: float) -> float:
    """Seconds a client with no overhead of its own needs: ``slots`` requests at a time,
    each taking ``service``, every ``every``-th request answered 429 at once (as the peer
    does, before its limit counts it) and that message free to go again ``retry_after``
    later."""
    free = [0.0] * slots  # when each slot is free again
    ready = [(0.0, i) for i in range(n)]  # (ready at, message), all there at the start
    heapq.heapify(ready)
    requests, done = 0, 0.0
    while ready:
        at, message = heapq.heappop(ready)
        slot = heapq.heappop(free)
        start = max(at, slot)
        requests += 1
        if every and requests % every == 0:
            heapq.heappush(free, start)
            heapq.heappush(ready, (start + retry_after, message))
            continue
        heapq.heappush(free, start + service)
        done = max(done, start + service)
    return done


def mode(args: argparse.Namespace) -> str:
    said = (f"service {args.service_ms:g} ms, 429 (Retry-After {args.retry_after} s) for a "
            f"request beyond {args.slots} in flight per mailbox")
    if args.throttle_every:
        said += f" and for every {args.throttle_every}th mail request (stress)"
    return said


def report(args: argparse.Namespace, accepted: dict[str, float], arrived: dict[str, float],
           failed: int, statuses: dict[int, int], most: int, errors: list[str],
           daemon_cpu: float) -> None:
    delivered = [bid for bid in accepted if bid in arrived]
    minimum = args.n * args.service_ms / 1000 / args.slots
    print(f"graph surge: {args.n} notifications, {mode(args)}, store {args.store}")
    if not delivered:
        print("  nothing was delivered")
    else:
        took = max(arrived[b] for b in delivered) - min(accepted.values())
        latency = [(arrived[b] - accepted[b]) * 1000 for b in delivered]
        p50, p99 = percentile(latency, 50), percentile(latency, 99)
        print(f"  completion      {took:.2f} s (first acknowledged -> last accepted by Graph)")
        print(f"  minimum         {minimum:.2f} s (N x service / slots)")
        print(f"  ratio           {took / minimum:.3f}x (target <= 1.03x)")
        with contextlib.suppress(ValueError):
            floor = ideal_completion(args.n, args.service_ms / 1000, args.slots,
                                     args.throttle_every, float(args.retry_after))
            print(f"  ideal client    {floor:.2f} s = {floor / minimum:.3f}x of the minimum "
                  f"(honouring Retry-After, no overhead); measured {took / floor:.3f}x of it")
        print(f"  latency         p50 {p50:.0f} ms, p99 {p99:.0f} ms "
              "(enqueue acknowledged -> accepted by Graph)")
        intake = max(accepted.values()) - min(accepted.values())
        first = min(arrived[b] for b in delivered) - min(accepted.values())
        print(f"  intake          {intake:.2f} s to acknowledge all {len(accepted)}; first "
              f"accepted by Graph {first * 1000:.0f} ms after the first acknowledgement")
        # Graph's pace while intake shares the daemon's CPU, and once it is done.
        end_of_intake = max(accepted.values())
        during = sum(1 for b in delivered if arrived[b] <= end_of_intake)
        after = len(delivered) - during
        last = max(arrived[b] for b in delivered)
        best = args.slots * 1000 / args.service_ms
        pace = [f"{during / intake:.0f}/s while intake runs" if intake > 0 else "",
                f"{after / (last - end_of_intake):.0f}/s after" if last > end_of_intake else ""]
        print(f"  Graph pace      {', '.join(p for p in pace if p)} (at most {best:.0f}/s)")
        print(f"  daemon CPU      {daemon_cpu * 1000 / len(delivered):.1f} ms per message "
              f"({daemon_cpu:.1f} s; target <= 2 ms)")
    print(f"  Graph answers   {statuses.get(202, 0)} x 202, {statuses.get(429, 0)} x 429 "
          f"(waited out), most in flight {most}")
    print(f"  failed          {failed} SEND_FAILED, {len(accepted) - len(delivered)} "
          f"acknowledged but not delivered, {args.n - len(accepted)} not acknowledged")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"  load average    {load} ({os.cpu_count()} cores)")
    for error in errors[:5]:
        print(f"  intake error: {error}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--n", type=int, default=600, help="notifications (default 600)")
    parser.add_argument("--service-ms", type=float, default=50.0,
                        help="Graph's time per request in ms (default 50)")
    parser.add_argument("--slots", type=int, default=4,
                        help="concurrent requests Graph allows per mailbox, and the server's "
                        "maxConcurrency (default 4)")
    parser.add_argument("--throttle-every", type=int, default=0,
                        help="stress: also answer every Nth mail request with 429 (default 0: "
                        "only requests beyond --slots in flight, Graph's throttle)")
    parser.add_argument("--retry-after", default="1",
                        help="Retry-After of those 429s in seconds (default 1)")
    parser.add_argument("-c", "--concurrency", type=int, default=16,
                        help="concurrent HTTP clients posting notifications (default 16)")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--bare", action="store_true",
                        help="also time a bare client (no daemon) against a fresh peer: the "
                        "floor the ratio is read against (default mode only)")
    parser.add_argument("--transport-only", action="store_true",
                        help="no daemon: the Graph transport's CPU per send on its own")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds allowed for delivery (default 300)")
    args = parser.parse_args(argv)
    if min(args.n, args.slots, args.concurrency) < 1 or args.service_ms <= 0:
        parser.error("-n, --slots, --concurrency and --service-ms must be positive")
    if args.bare and args.throttle_every:
        parser.error("--bare answers no 429s: use it without --throttle-every")
    logging.basicConfig(level=logging.ERROR)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
