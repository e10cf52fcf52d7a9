"""Console pages under load (SPEC X6): server time per page with a big audit and history.

Builds a store per database (a SQLite file; a fresh schema in PostgreSQL) holding
N audit rows (default 100,000) and R revisions (default 1,000), then requests each
console page K times in-process (ASGI, no sockets) and prints, per page, the
server time (an ASGI wrapper's clock from request to the last body byte: median,
p95, min, max; the first request apart, as it fills caches) and the bytes a
browser pulls for it (the HTML plus the console's stylesheet and script). The
baseline is the JSON API's ``GET /v1/audit?limit=50`` with the same filter, the
same store, the same way. ``--explain`` prints the audit queries' plans.

    python bench/console.py                       # 100,000 rows, 1,000 revisions
    python bench/console.py --audit 2000 --revisions 50 -k 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
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
from fastapi import FastAPI, Request

from reconciler.config.desired import CanonicalResource, ResourceKey
from reconciler.console import app as console_app
from reconciler.console import session
from reconciler.console.deps import ConsoleDeps
from reconciler.console.render import STATIC
from reconciler.daemon.api import audit as audit_api
from reconciler.runtime.access import Principal
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
from reconciler.state.base import AuditEntry, AuditStatus
from reconciler.state.contract import ErrorDetails, MailRecord

DEFAULT_PG = os.environ.get("RECONCILE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
NAMESPACES = [f"ns{i:02d}" for i in range(20)]
API = "reconciler.dev/v1"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
STATUSES = [AuditStatus.SENT] * 17 + [AuditStatus.RETRYING, AuditStatus.SEND_FAILED,
                                      AuditStatus.RECEIVED]
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
            "password": {"secretRef": f"env:{ns.upper()}_{name.upper()}_PASSWORD"}}
    return CanonicalResource.build(ResourceKey("OutgoingServer", ns, name), API, spec)


def seed_history(store: Store, revisions: int) -> None:
    live: dict[ResourceKey, CanonicalResource] = {}
    for number in range(1, revisions + 1):
        ns = NAMESPACES[number % len(NAMESPACES)]
        name = f"smtp{number % 5}"
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


def seed_incoming(store: Store) -> None:
    for ns in NAMESPACES:
        store.incoming.fetch_succeeded(ns, "support", error_folder_count=1)
        store.incoming.record(ns, "support", [MailRecord(f"imap:INBOX:1:{i}", error=ErrorDetails(
            "no-sender", None)) for i in range(3)])


def build(url: str, audit_rows: int, revisions: int) -> tuple[Store, float]:
    started = time.perf_counter()
    store = open_store(url)
    seed_audit(store, audit_rows)
    seed_history(store, revisions)
    seed_incoming(store)
    store.sync.update(last_fetched=f"{revisions:040x}", last_applied=f"{revisions - 3:040x}")
    return store, time.perf_counter() - started


# -- the apps -------------------------------------------------------------------------


def timed(app: Any, spans: Timer) -> Callable[..., Awaitable[None]]:
    """The app with a clock: request received -> last body byte sent."""
    async def wrapper(scope: Any, receive: Any, send: Any) -> None:
        started = time.perf_counter()

        async def sending(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                spans.append(time.perf_counter() - started)

        await app(scope, receive, sending)
    return wrapper


def apps(store: Store, principal: Principal) -> tuple[FastAPI, FastAPI]:
    deps = ConsoleDeps(store, DaemonSettings(store_url=store.location,
                                             sync_repo="https://git.example/it/config.git"),
                       ConfigHolder(), DaemonMetrics(), None)

    async def as_principal(request: Request) -> Principal:
        request.state.csrf_token = "bench"
        return principal

    # The session layer stands aside: this measures the screens, not sign-in.
    session.signed_in = as_principal  # type: ignore[assignment]
    console = FastAPI()
    console.dependency_overrides[session.signed_in] = as_principal
    console.include_router(console_app.router(deps))
    api = FastAPI()
    api.include_router(audit_api.router(store))
    return console, api


def asset_bytes(html: str) -> int:
    total = len(html.encode())
    for path in re.findall(r'(?:href|src)="[^"]*/static/([^"]+)"', html):
        file = STATIC / path
        total += file.stat().st_size if file.is_file() else 0
    return total


async def measure(app: Any, path: str, k: int) -> tuple[float, Timer, int, int]:
    spans: Timer = []
    transport = httpx.ASGITransport(app=timed(app, spans))
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        sizes = 0
        for _ in range(k + 1):
            response = await client.get(path)
            if response.status_code != 200:
                raise SystemExit(f"{path}: HTTP {response.status_code}: {response.text[:300]}")
            sizes = asset_bytes(response.text) if "html" in response.headers.get(
                "content-type", "") else len(response.content)
    return spans[0], spans[1:], sizes, response.status_code


def pages(store: Store, revisions: int) -> list[tuple[str, str, str]]:
    """(label, app, path): the console's pages and the JSON API baseline."""
    newest = store.audit.page(limit=1)[0].id or 0
    # one the scoped principal sees too (revision n changes NAMESPACES[n % 20])
    middle = max(1, revisions // 2 // len(NAMESPACES) * len(NAMESPACES) + 1)
    return [
        ("api /v1/audit (baseline)", "api", "/v1/audit?limit=50"),
        ("audit", "console", "/console/audit"),
        ("api /v1/audit status (baseline)", "api", "/v1/audit?limit=50&status=SEND_FAILED"),
        ("audit status", "console", "/console/audit?status=SEND_FAILED"),
        ("audit recipient", "console", "/console/audit?recipient=user42%40example.com"),
        ("audit namespace", "console", "/console/audit?namespace=ns07"),
        ("audit time range", "console",
         "/console/audit?since=2026-01-10T00:00&until=2026-01-11T00:00"),
        ("audit deep page", "console", f"/console/audit?before={newest // 2}"),
        ("audit csv (1 recipient)", "console", "/console/audit.csv?recipient=user42%40example.com"),
        ("history", "console", "/console/history"),
        ("history deep page", "console", f"/console/history?before={middle}"),
        ("revision", "console", f"/console/history/{middle}"),
        ("revision config.yaml", "console", f"/console/history/{middle}/config.yaml"),
        ("sync", "console", "/console/sync"),
        ("incoming", "console", "/console/incoming"),
    ]


def explain(url: str) -> None:
    """The plans of the queries behind the audit and history pages, as the store builds
    them (the namespace scope is one index walk per namespace, merged)."""
    from sqlalchemy import create_engine, select, union_all

    from reconciler.state import schema as t
    a, r, rv = t.audit.c, t.revisions.c, t.resource_versions.c
    walks = [select(select(t.audit).where(a.namespace == ns).order_by(a.id.desc()).limit(51)
                    .subquery()) for ns in NAMESPACES[:2]]
    merged = union_all(*walks).subquery()
    failed = [select(select(t.audit).where(a.namespace == ns, a.status.in_(["SEND_FAILED"]))
                     .order_by(a.id.desc()).limit(51).subquery()) for ns in NAMESPACES[:2]]
    failed_merged = union_all(*failed).subquery()
    queries = {
        "audit status": select(t.audit).where(a.status.in_(["SEND_FAILED"])).order_by(
            a.id.desc()).limit(51),
        "audit 2 namespaces": select(merged).order_by(merged.c.id.desc()).limit(51),
        "audit 2 namespaces, status": select(failed_merged).order_by(
            failed_merged.c.id.desc()).limit(51),
        "audit recipient": select(t.audit).where(
            a.recipient_key == "user42@example.com").order_by(a.id.desc()).limit(51),
        "history 2 namespaces": select(t.revisions).where(r.number.in_(select(rv.revision).where(
            rv.namespace.in_(NAMESPACES[:2])))).order_by(r.number.desc()).limit(51),
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


def run(label: str, url: str, args: argparse.Namespace) -> None:
    store, seeded = build(url, args.audit, args.revisions)
    print(f"\n{label}: {args.audit:,} audit rows, {args.revisions:,} revisions "
          f"(seeded in {seeded:.0f} s); {args.k} requests per page")
    if args.explain:
        explain(url)
    scoped = Principal.of("acme", ["auditor"], NAMESPACES[:2])
    everyone = Principal.of("admin", ["admin"])
    head = (f"  {'page':<34}{'first ms':>9}{'p50 ms':>8}{'p95 ms':>8}{'min ms':>8}"
            f"{'max ms':>8}{'KB':>7}{'vs base':>8}")
    for who, principal in (("unscoped admin", everyone), ("scoped to 2 namespaces", scoped)):
        console, api = apps(store, principal)
        print(f"  as {who}\n{head}")
        base = None
        for name, which, path in pages(store, args.revisions):
            if which == "api" and principal is scoped:
                continue
            first, spans, size, _ = asyncio.run(measure(
                console if which == "console" else api, path, args.k))
            ms = [s * 1000 for s in spans]
            p50 = statistics.median(ms)
            if which == "api":
                base = p50
            ratio = f"{p50 / base:.2f}x" if base and which == "console" else "-"
            print(f"  {name:<34}{first * 1000:>9.1f}{p50:>8.1f}{percentile(ms, 95):>8.1f}"
                  f"{min(ms):>8.1f}{max(ms):>8.1f}{size / 1024:>7.1f}{ratio:>8}")
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audit", type=int, default=100_000, help="audit rows")
    parser.add_argument("--revisions", type=int, default=1_000)
    parser.add_argument("-k", type=int, default=30, help="requests per page")
    parser.add_argument("--pg", default=DEFAULT_PG)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument("--explain", action="store_true", help="print the audit query plans")
    args = parser.parse_args()
    if args.only != "postgresql":
        with sqlite_url("bench-console") as url:
            run("sqlite", url, args)
    if args.only != "sqlite":
        with postgres_url(args.pg, "bench_console") as url:
            if url is not None:
                run("postgresql", url, args)
    print("\n(server time: the ASGI app's own, request received -> last body byte; first = "
          "the first request, which also runs the chain check on history; KB = HTML plus "
          "the stylesheet and script it links, when present; vs base = p50 against the JSON "
          "API's GET /v1/audit with the same filter)")


if __name__ == "__main__":
    main()
