"""Console pages, server time: each screen next to the JSON API over the same store.

SPEC X6 asks every page to render in under 100 ms on the server. This builds a
SQLite store with ``--servers`` OutgoingServers per namespace (three namespaces,
health records, a sent mail each) and ``--messages`` deferred outbox messages,
then requests every page ``--repeat`` times in-process (the ASGI app driven by
Starlette's TestClient: no network, so the time is the server's) and prints the
median, min and max per page. The baseline in the same run: ``/v1/outbox`` (the
same 50 rows as JSON) and ``/v1/status``. Prints figures; asserts nothing.

    python bench/console.py                       # 30 servers, 2000 messages, 30 rounds
    python bench/console.py --servers 2 --messages 20 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from reconciler.config.desired import CanonicalResource, ResourceKey
from reconciler.daemon.api.factory import create_api
from reconciler.health import record as rec
from reconciler.runtime.live_config import ConfigHolder
from reconciler.runtime.metrics import DaemonMetrics
from reconciler.runtime.settings import DaemonSettings
from reconciler.state import Action, Change, RevisionMeta, SqlStore, open_store
from reconciler.state.base import AuditEntry, AuditStatus
from reconciler.state.outbox_control import QueueFilter

NAMESPACES = ("default", "acme", "globex")
TOKEN_ENV = "RECONCILE_BENCH_CONSOLE_TOKEN"


def _server(namespace: str, name: str) -> Change:
    spec = {"email": f"{name}@desk.example", "host": f"{name}.desk.example", "port": 587,
            "security": "starttls", "primary": name.endswith("-0"),
            "alternateHost": f"backup-{name}.desk.example", "alternatePort": 587}
    resource = CanonicalResource.build(ResourceKey("OutgoingServer", namespace, name),
                                       "reconciler.dev/v1", spec, None)
    return Change(Action.CREATE, resource.key, None, resource)


def build(store: SqlStore, servers: int, messages: int) -> None:
    names = [(ns, f"{ns}-{i}") for ns in NAMESPACES for i in range(servers)]
    store.commit([_server(ns, name) for ns, name in names], RevisionMeta(actor="bench"),
                 base_revision=store.head())
    now = datetime.now(UTC)
    for ns, name in names:
        key = ResourceKey("OutgoingServer", ns, name)
        store.status_put(key, rec.merged({}, rec.HealthRecord(
            rec.REACHABLE, now, now, rec.ALTERNATE,
            {rec.MAIN: rec.HostHealth(f"{name}:587", rec.UNREACHABLE, "tcp: refused", "tcp"),
             rec.ALTERNATE: rec.HostHealth(f"backup-{name}:587", rec.REACHABLE)},
            "tcp: refused", "tcp")))
        store.audit.record([AuditEntry(AuditStatus.SENT, "250 ok", namespace=ns, server=name,
                                       recipient="a@example.com")])
    for i in range(messages):
        store.outbox.enqueue({"module": "requests", "to": ["a@example.com"],
                              "subject": f"message {i}", "textBody": "x"},
                             namespace=NAMESPACES[i % len(NAMESPACES)], idempotency_key=None)
    while claimed := store.outbox.claim("bench", 1000, 600):
        for m in claimed:
            store.outbox.schedule_retry(m.id, "bench", now + timedelta(hours=1),
                                        "451 4.3.0 try again later")


def timed(client: TestClient, path: str, repeat: int, **kw: object) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        reply = client.get(path, **kw)  # type: ignore[arg-type]
        out.append((time.perf_counter() - started) * 1000)
        assert reply.status_code == 200, (path, reply.status_code)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=10, help="per namespace (3 of them)")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    token = secrets.token_hex(16)
    os.environ[TOKEN_ENV] = token
    with tempfile.TemporaryDirectory() as tmp, open_store(f"{tmp}/bench.db") as store:
        build(store, args.servers, args.messages)
        holder = ConfigHolder()
        holder.refresh(store)
        app = create_api(store, DaemonSettings(store_url=f"{tmp}/bench.db", console=True,
                                               api_tokens=(f"env:{TOKEN_ENV}",)),
                         DaemonMetrics(), holder)
        client = TestClient(app, follow_redirects=False)
        form = client.get("/console/signin").text
        csrf = form.split('name="csrf_token" value="')[1].split('"')[0]
        client.post("/console/signin", data={"csrf_token": csrf, "token": token})
        some = store.outbox.search(QueueFilter(), limit=1)[0].id
        api = {"Authorization": f"Bearer {token}"}
        rows = [
            ("console /console/", timed(client, "/console/", args.repeat)),
            ("console /console/servers", timed(client, "/console/servers", args.repeat)),
            ("console /console/outbox", timed(client, "/console/outbox", args.repeat)),
            ("console /console/outbox/ID", timed(client, f"/console/outbox/{some}",
                                                 args.repeat)),
            ("baseline /v1/outbox?limit=50", timed(client, "/v1/outbox?limit=50&state="
                                                   "retry_wait", args.repeat, headers=api)),
            ("baseline /v1/status", timed(client, "/v1/status", args.repeat, headers=api)),
        ]
    print(f"{len(NAMESPACES) * args.servers} servers, {args.messages} deferred messages, "
          f"{args.repeat} requests per page (ms, in-process)")
    print(f"{'page':34} {'median':>8} {'min':>8} {'max':>8}")
    for name, values in rows:
        print(f"{name:34} {statistics.median(values):8.1f} {min(values):8.1f} "
              f"{max(values):8.1f}")


if __name__ == "__main__":
    main()
