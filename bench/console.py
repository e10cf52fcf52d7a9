"""Console pages under load (SPEC X6): server time of every page, both databases.

One run builds a store per database (a SQLite file; a fresh schema in PostgreSQL)
holding ``--audit`` audit rows (default 100,000), ``--revisions`` revisions
(default 1,000; they leave ~100 outgoing servers over 20 namespaces, each given a
health record), ``--messages`` outbox messages (default 3,000: two thirds
deferred with an error, one third held) and incoming error-folder entries. It
then serves the daemon's real app (``create_api`` with the console on) and signs
in through the console's sign-in form with real API tokens: an admin, and an
operator limited to two namespaces. Each page is requested ``-k`` times
in-process (ASGI, no sockets) and the table shows, per page, the server time
(an ASGI wrapper's clock from request to the last body byte: first request
apart, then median, p95, min, max) and the bytes a browser pulls for it (the
HTML plus the stylesheet and script it links). The baselines, same store, same
way: the JSON API's ``/v1/audit``, ``/v1/outbox`` and ``/v1/status``; "vs base"
is each page's median over the baseline printed above it. ``--explain`` prints
the plans of the audit, outbox and last-send queries.

    python bench/console.py                       # full sizes, both databases
    python bench/console.py --audit 2000 --revisions 50 --messages 60 -k 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpx
from _stats import percentile
from _stores import postgres_url, sqlite_url

from reconciler.config.desired import CanonicalResource, ResourceKey
from reconciler.console.render import STATIC
from reconciler.daemon.api.factory import create_api
from reconciler.health import record as rec
from reconciler.runtime.access import Role, TokenSpec
from reconciler.runtime.live_config import ConfigHolder
from reconciler.runtime.metrics import DaemonMetrics
from reconciler.runtime.settings import DaemonSettings
from reconciler.state import (
    Action,
    Change,
    FieldChange,
    RevisionKind,
    RevisionMeta,
    Store,
    open_store,
)
from reconciler.state.base import AuditEntry, AuditStatus, EnqueueRequest, OutboxState
from reconciler.state.contract import ErrorDetails, MailRecord
from reconciler.state.outbox_control import QueueFilter

DEFAULT_PG = os.environ.get("RECONCILE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
NAMESPACES = [f"ns{i:02d}" for i in range(20)]
SCOPED = NAMESPACES[:2]
API = "reconciler.dev/v1"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
STATUSES = [AuditStatus.SENT] * 17 + [AuditStatus.RETRYING, AuditStatus.SEND_FAILED,
                                      AuditStatus.RECEIVED]
ENV = {"admin": "RECONCILE_BENCH_CONSOLE_ADMIN", "scoped": "RECONCILE_BENCH_CONSOLE_SCOPED"}
Timer = list[float]


# -- the store ------------------------------------------------------------------------


def seed_audit(store: Store, n: int) -> None:
    batch = []
    for i in range(n):
        batch.append(AuditEntry(
            STATUSES[(i // 3) % len(STATUSES)], f"250 2.0.0 OK queued as {i:08X}",
            namespace=NAMESPACES[i % len(NAMESPACES)], server=f"smtp{i % 10}",
            recipient=f"user{i % 5000}@example.com", message_id=f"<m{i}@desk.example>",
            outbox_id=i + 1, created_at=T0 + timedelta(seconds=30 * i)))
        if len(batch) == 5000:
            store.audit.record(batch)
            batch = []
    store.audit.record(batch)


def server_resource(ns: str, name: str, host: str) -> CanonicalResource:
    spec = {"email": f"{name}@{ns}.example", "protocol": "smtp", "host": host, "port": 587,
            "alternateHost": f"backup.{ns}.example", "alternatePort": 587,
            "security": "starttls", "primary": name == "smtp0",  # one primary per namespace
            "auth": {"type": "basic", "username": f"{name}@{ns}.example",
                     "password": {"secretRef": f"env:{ns.upper()}_{name.upper()}_PASSWORD"}}}
    return CanonicalResource.build(ResourceKey("OutgoingServer", ns, name), API, spec)


def seed_history(store: Store, revisions: int) -> None:
    """Revision n changes server smtp{n // 20 % 5} of NAMESPACES[n % 20]: 100 servers."""
    live: dict[ResourceKey, CanonicalResource] = {}
    for number in range(1, revisions + 1):
        ns = NAMESPACES[number % len(NAMESPACES)]
        name = f"smtp{number // len(NAMESPACES) % 5}"
        after = server_resource(ns, name, f"mx{number}.{ns}.example")
        before = live.get(after.key)
        change = (Change(Action.CREATE, after.key, None, after,
                         (FieldChange("host", None, after.spec["host"]),)) if before is None
                  else Change(Action.UPDATE, after.key, before, after,
                              (FieldChange("host", before.spec["host"], after.spec["host"]),)))
        # the last few are out of band: the sync page then has drift to show
        kind = RevisionKind.OUT_OF_BAND if number > revisions - 3 else RevisionKind.APPLY
        store.commit([change], RevisionMeta(
            actor="ci", message=f"change {number}", git_commit=f"{number:040x}",
            pull_request=str(number), kind=kind), base_revision=number - 1)
        live[after.key] = after


def seed_health(store: Store) -> None:
    now = datetime.now(UTC)
    for key in store.snapshot().resources:
        down = hash(key.name) % 4 == 0
        main = rec.HostHealth(f"{key.name}:587", rec.UNREACHABLE if down else rec.REACHABLE,
                              "tcp: connection refused" if down else None,
                              "tcp" if down else None)
        alternate = rec.HostHealth(f"backup.{key.namespace}.example:587", rec.REACHABLE)
        store.status_put(key, rec.merged({}, rec.HealthRecord(
            rec.REACHABLE, now, now, rec.ALTERNATE if down else rec.MAIN,
            {rec.MAIN: main, rec.ALTERNATE: alternate},
            main.error, main.step)))


def seed_outbox(store: Store, messages: int) -> None:
    """Two thirds deferred with a last error, one third held."""
    store.outbox.enqueue_many([EnqueueRequest(
        {"module": "requests", "to": [f"user{i}@example.com"], "subject": f"message {i}",
         "textBody": "x"}, NAMESPACES[i % len(NAMESPACES)]) for i in range(messages)])
    later = datetime.now(UTC) + timedelta(hours=1)
    while claimed := store.outbox.claim("bench", 1000, 600):
        for m in claimed:
            store.outbox.schedule_retry(m.id, "bench", later, "451 4.3.0 try again later")
    deferred = store.outbox.search(QueueFilter(states=(OutboxState.RETRY_WAIT,)), limit=None)
    held = tuple(m.id for m in deferred[::3])
    for start in range(0, len(held), 500):
        store.outbox.hold(QueueFilter(ids=held[start:start + 500]), actor="bench")


def seed_incoming(store: Store) -> None:
    for ns in NAMESPACES:
        store.incoming.fetch_succeeded(ns, "support", error_folder_count=1)
        store.incoming.record(ns, "support", [MailRecord(f"imap:INBOX:1:{i}", error=ErrorDetails(
            "no-sender", None)) for i in range(3)])


def build(url: str, args: argparse.Namespace) -> tuple[Store, float]:
    started = time.perf_counter()
    store = open_store(url)
    seed_audit(store, args.audit)
    seed_history(store, args.revisions)
    seed_health(store)
    seed_outbox(store, args.messages)
    seed_incoming(store)
    store.sync.update(last_fetched=f"{args.revisions:040x}",
                      last_applied=f"{args.revisions - 3:040x}")
    return store, time.perf_counter() - started


# -- the app and its clients ----------------------------------------------------------


def timed(app: Any, spans: list[tuple[float, float]]) -> Callable[..., Awaitable[None]]:
    """The app with a clock: request received -> (first, last) body byte sent."""
    async def wrapper(scope: Any, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        first: list[float] = []

        async def sending(message: Any) -> None:
            await send(message)
            if message["type"] != "http.response.body":
                return
            if not first:
                first.append(time.perf_counter() - started)
            if not message.get("more_body"):
                spans.append((first[0], time.perf_counter() - started))

        await app(scope, receive, sending)
    return wrapper


def daemon(store: Store) -> tuple[Any, dict[str, str]]:
    """The daemon's app with the console on, and a generated token per principal."""
    tokens = {who: secrets.token_hex(16) for who in ENV}
    for who, token in tokens.items():
        os.environ[ENV[who]] = token
    access = (TokenSpec(f"env:{ENV['admin']}", (Role.ADMIN,), None, "admin"),
              TokenSpec(f"env:{ENV['scoped']}", (Role.OPERATOR,), tuple(SCOPED), "two-desks"))
    holder = ConfigHolder()
    holder.refresh(store)
    settings = DaemonSettings(store_url=store.location, console=True, api_access=access,
                              sync_repo="https://git.example/it/config.git")
    return create_api(store, settings, DaemonMetrics(), holder), tokens


async def signed_in(client: httpx.AsyncClient, token: str) -> None:
    form = (await client.get("/console/signin")).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert csrf, "the sign-in page has no CSRF token"
    done = await client.post("/console/signin", data={"csrf_token": csrf.group(1),
                                                      "token": token})
    if done.status_code != 303:
        raise SystemExit(f"sign-in failed: HTTP {done.status_code}")


def asset_bytes(html: str) -> int:
    total = len(html.encode())
    for path in re.findall(r'(?:href|src)="[^"]*/static/([^"]+)"', html):
        file = STATIC / path
        total += file.stat().st_size if file.is_file() else 0
    return total


async def measure(app: Any, token: str, paths: list[str], k: int
                  ) -> list[tuple[float, Timer, int]]:
    """Per path: the first request's time, the next ``k`` times, the bytes pulled. A
    path marked ``#first`` is timed to its first body chunk (a streamed export)."""
    spans: list[tuple[float, float]] = []
    transport = httpx.ASGITransport(app=timed(app, spans))
    out = []
    async with httpx.AsyncClient(transport=transport, base_url="http://bench",
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        await signed_in(client, token)
        for marked in paths:
            path, _, mark = marked.partition("#")
            spans.clear()
            for _ in range(k + 1):
                response = await client.get(path)
                if response.status_code != 200:
                    raise SystemExit(f"{path}: HTTP {response.status_code}: "
                                     f"{response.text[:300]}")
            size = asset_bytes(response.text) if "html" in response.headers.get(
                "content-type", "") else len(response.content)
            times = [first if mark == "first" else last for first, last in spans]
            out.append((times[0], times[1:], size))
    return out


# -- the pages ------------------------------------------------------------------------


def pages(store: Store, revisions: int) -> list[tuple[str, str]]:
    """(label, path): every console page, each after the JSON baseline it is held to
    (labels starting "api" are baselines; the scoped principal skips none)."""
    newest = store.audit.page(limit=1)[0].id or 0
    # one the scoped principal sees too (revision n changes NAMESPACES[n % 20])
    middle = max(1, revisions // 2 // len(NAMESPACES) * len(NAMESPACES) + 1)
    deferred = store.outbox.search(QueueFilter(states=(OutboxState.RETRY_WAIT,),
                                               namespaces=tuple(SCOPED)), limit=None)
    mid_id = deferred[len(deferred) // 2].id if deferred else 0
    some = deferred[0].id if deferred else 0
    return [
        ("api /v1/status (baseline)", "/v1/status"),
        ("home /", "/console/"),
        ("servers", "/console/servers"),
        ("api /v1/outbox (baseline)", "/v1/outbox?limit=50&state=retry_wait"),
        ("outbox deferred", "/console/outbox"),
        ("outbox held", "/console/outbox?show=held"),
        ("outbox deep page", f"/console/outbox?after={mid_id}"),
        ("outbox one namespace", f"/console/outbox?namespace={SCOPED[1]}"),
        ("outbox/ID", f"/console/outbox/{some}"),
        ("api /v1/audit (baseline)", "/v1/audit?limit=50"),
        ("audit", "/console/audit"),
        ("audit status", "/console/audit?status=SEND_FAILED"),
        ("audit recipient", "/console/audit?recipient=user42%40example.com"),
        ("audit namespace", f"/console/audit?namespace={SCOPED[1]}"),
        ("audit time range", "/console/audit?since=2026-01-10T00:00&until=2026-01-11T00:00"),
        ("audit deep page", f"/console/audit?before={newest // 2}"),
        ("audit csv (1 recipient)", "/console/audit.csv?recipient=user42%40example.com"),
        ("audit csv first chunk", f"/console/audit.csv?namespace={SCOPED[1]}#first"),
        ("history", "/console/history"),
        ("history deep page", f"/console/history?before={middle}"),
        ("revision", f"/console/history/{middle}"),
        ("revision config.yaml", f"/console/history/{middle}/config.yaml"),
        ("sync", "/console/sync"),
        ("incoming", "/console/incoming"),
    ]


def explain(url: str) -> None:
    """The plans of the queries behind the busiest pages, as the store builds them."""
    from sqlalchemy import create_engine, func, literal, select, union_all

    from reconciler.state import schema as t
    a, o = t.audit.c, t.outbox.c
    walks = [select(select(t.audit).where(a.namespace == ns).order_by(a.id.desc()).limit(51)
                    .subquery()) for ns in SCOPED]
    merged = union_all(*walks).subquery()
    outbox_walks = [select(select(t.outbox).where(o.namespace == ns, o.state == "retry_wait")
                           .order_by(o.id).limit(51).subquery()) for ns in SCOPED]
    outbox_merged = union_all(*outbox_walks).subquery()
    wanted = union_all(*(select(literal(i).label("position"), literal(ns).label("ns"),
                                literal("smtp1").label("srv"))
                         for i, ns in enumerate(SCOPED))).subquery("wanted")
    newest = select(func.max(a.created_at)).where(
        a.namespace == wanted.c.ns, a.server == wanted.c.srv, a.status == "SENT")
    queries = {
        "audit status": select(t.audit).where(a.status.in_(["SEND_FAILED"])).order_by(
            a.id.desc()).limit(51),
        "audit 2 namespaces": select(merged).order_by(merged.c.id.desc()).limit(51),
        "audit recipient": select(t.audit).where(
            a.recipient_key == "user42@example.com").order_by(a.id.desc()).limit(51),
        "outbox deferred": select(t.outbox).where(o.state == "retry_wait", o.id > 0)
        .order_by(o.id).limit(51),
        "outbox 2 namespaces": select(outbox_merged).order_by(outbox_merged.c.id).limit(51),
        "last sends": select(wanted.c.position, newest.scalar_subquery()),
    }
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1)
                           if "://" in url else f"sqlite:///{url}")
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    with engine.connect() as conn:
        for label, q in queries.items():
            sql = str(q.compile(engine, compile_kwargs={"literal_binds": True}))
            plan = [" ".join(str(c) for c in row) for row in conn.exec_driver_sql(prefix + sql)]
            print(f"  explain {label}: " + " | ".join(p.strip() for p in plan))
    engine.dispose()


HEAD = (f"  {'page':<28}{'first ms':>9}{'p50 ms':>8}{'p95 ms':>8}{'min ms':>8}"
        f"{'max ms':>8}{'KB':>7}{'vs base':>8}")


def table(rows: list[tuple[str, str]], found: list[tuple[float, Timer, int]]) -> None:
    print(HEAD)
    base = None
    for (name, _path), (first, spans, size) in zip(rows, found, strict=True):
        ms = [s * 1000 for s in spans]
        p50 = statistics.median(ms)
        p95 = percentile(ms, 95) or p50
        if name.startswith("api"):
            base = p50
        ratio = f"{p50 / base:.2f}x" if base and not name.startswith("api") else "-"
        print(f"  {name:<28}{first * 1000:>9.1f}{p50:>8.1f}{p95:>8.1f}"
              f"{min(ms):>8.1f}{max(ms):>8.1f}{size / 1024:>7.1f}{ratio:>8}")


def run(label: str, url: str, args: argparse.Namespace) -> None:
    store, seeded = build(url, args)
    servers = sum(1 for k in store.snapshot().resources if k.kind == "OutgoingServer")
    print(f"\n{label}: {args.audit:,} audit rows, {args.revisions:,} revisions, {servers} "
          f"outgoing servers, {args.messages:,} outbox messages (seeded in {seeded:.0f} s); "
          f"{args.k} requests per page")
    if args.explain:
        explain(url)
    app, tokens = daemon(store)
    rows = pages(store, args.revisions)
    for who, title in (("admin", "unscoped admin"), ("scoped", "operator of 2 namespaces")):
        print(f"  as {title}")
        found = asyncio.run(measure(app, tokens[who], [p for _n, p in rows], args.k))
        table(rows, found)
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audit", type=int, default=100_000, help="audit rows")
    parser.add_argument("--revisions", type=int, default=1_000)
    parser.add_argument("--messages", type=int, default=3_000, help="outbox messages")
    parser.add_argument("-k", type=int, default=30, help="requests per page")
    parser.add_argument("--pg", default=DEFAULT_PG)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument("--explain", action="store_true", help="print the query plans")
    args = parser.parse_args()
    if args.only != "postgresql":
        with sqlite_url("bench-console") as url:
            run("sqlite", url, args)
    if args.only != "sqlite":
        with postgres_url(args.pg, "bench_console") as url:
            if url is not None:
                run("postgresql", url, args)
    print("\n(server time: the ASGI app's own, request received -> last body byte, or the "
          "first chunk for a streamed export; first = the first request, which also fills "
          "caches and runs the chain check on history; KB = HTML plus the stylesheet and "
          "script it links (for a CSV: the whole download); vs base = p50 against the "
          "JSON API baseline above it, same store, same principal)")


if __name__ == "__main__":
    main()
