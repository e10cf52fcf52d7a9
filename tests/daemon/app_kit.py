"""Builders and helpers for the worker and daemon tests: config written straight to a
store, notifications, a counting aiosmtpd sink, and waiting for conditions.

tests/daemon has no conftest (several suites share the folder); async tests here
call :func:`run` themselves.
"""

from __future__ import annotations

import asyncio
import email
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.policy import default as default_policy
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from reconciler.config.desired import CanonicalResource, ResourceKey
from reconciler.dispatch.worker import Worker
from reconciler.mail.envelope import Notification
from reconciler.mail.smtp.transport import SmtpTransport
from reconciler.mail.transport import Transport
from reconciler.runtime.live_config import ConfigSource
from reconciler.runtime.metrics import DaemonMetrics
from reconciler.runtime.settings import DaemonSettings
from reconciler.state import Action, Change, RevisionMeta, SqlStore
from reconciler.state.base import AuditEntry, OutboxMessage, OutboxState

if TYPE_CHECKING:
    from reconciler.daemon.app import Daemon

API = "reconciler.dev/v1"
HOST = "127.0.0.1"
NS = "default"
# Deadlines only bound a failing test: a machine also running a second test suite
# can take tens of seconds to start a daemon process or a peer's thread.
WAIT_S = 120.0
T = TypeVar("T")


# -- config in the store -----------------------------------------------------------


def resource(kind: str, name: str, spec: dict[str, Any], namespace: str = NS,
             labels: dict[str, str] | None = None) -> CanonicalResource:
    return CanonicalResource.build(ResourceKey(kind, namespace, name), API,
                                   {k: v for k, v in spec.items() if v is not None}, labels)


def smtp_server(name: str, port: int | None, *, namespace: str = NS, security: str = "none",
                primary: bool = False, **spec: Any) -> CanonicalResource:
    """An SMTP OutgoingServer on 127.0.0.1; ``replyTo=None`` leaves Reply-To out."""
    body: dict[str, Any] = {
        "email": f"{name}@desk.example", "senderName": "IT Help Desk",
        "replyTo": "support@desk.example", "protocol": "smtp", "host": HOST, "port": port,
        "security": security, "primary": primary, "timeoutSeconds": 5, "maxConcurrency": 4,
    }
    body.update(spec)
    return resource("OutgoingServer", name, body, namespace)


def cond(field: str, value: str, operator: str = "equals") -> dict[str, Any]:
    return {"field": field, "operator": operator, "value": value}


def rule(name: str, order: int, server: str, *conditions: dict[str, Any],
         module: str = "request", namespace: str = NS) -> CanonicalResource:
    return resource("OutgoingEmailRule", name, {
        "module": module, "order": order, "match": "all", "conditions": list(conditions),
        "server": server}, namespace)


def recipient_filter(name: str, type: str, *, emails: Iterable[str] = (),
                     domains: Iterable[str] = (), namespace: str = NS) -> CanonicalResource:
    return resource("RecipientFilter", name, {"type": type, "emails": list(emails),
                                              "domains": list(domains)}, namespace)


def mail_settings(namespace: str = NS, **retry: Any) -> CanonicalResource:
    """Retries within a fraction of a second, so tests never wait for backoff, and many
    of them, so a test restarting a peer meanwhile never sees the message given up."""
    body = {"initialBackoffSeconds": 0.05, "maxBackoffSeconds": 0.1, "maxAttempts": 100,
            "lifetimeMinutes": 60}
    body.update(retry)
    return resource("MailSettings", "settings", {"retry": body}, namespace)


def commit(store: SqlStore, *resources: CanonicalResource) -> int:
    """Make exactly ``resources`` the live config (no validation, no policies); the revision."""
    live = store.snapshot()
    wanted = {r.key: r for r in resources}
    changes = [Change(Action.DELETE, k, r, None) for k, r in live.resources.items()
               if k not in wanted]
    for key, res in wanted.items():
        before = live.resources.get(key)
        if before is None:
            changes.append(Change(Action.CREATE, key, None, res))
        elif before.digest != res.digest:
            changes.append(Change(Action.UPDATE, key, before, res))
    return store.commit(changes, RevisionMeta(actor="test"), base_revision=live.revision).number


# -- notifications -------------------------------------------------------------------


def note(*to: str, module: str = "request", namespace: str = NS, **kw: Any) -> Notification:
    body: dict[str, Any] = {"module": module, "namespace": namespace,
                            "to": list(to) or ["jane@corp.example"],
                            "subject": "Request ##RE-1## updated", "textBody": "hello"}
    body.update(kw)
    return Notification.model_validate(body)


def enqueue(store: SqlStore, notification: Notification, **kw: Any) -> int:
    return store.outbox.enqueue(notification, namespace=notification.namespace,
                                idempotency_key=notification.idempotency_key, **kw).id


def audit_of(store: SqlStore, outbox_id: int) -> list[AuditEntry]:
    """The message's audit rows, oldest first."""
    return sorted(store.audit.search(outbox_id=outbox_id, limit=None), key=lambda e: e.id or 0)


def statuses(entries: Iterable[AuditEntry]) -> list[str]:
    return [str(e.status) for e in entries]


def finished(store: SqlStore, outbox_id: int) -> OutboxMessage | None:
    msg = store.outbox.get(outbox_id)
    return msg if msg is not None and msg.state.terminal else None


# -- waiting ------------------------------------------------------------------------------


async def until(check: Callable[[], T], what: str, timeout: float = WAIT_S) -> T:
    """Poll ``check`` (in a thread: it may use the store) until it returns something true."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.02)


def wait_for(check: Callable[[], T], what: str, timeout: float = WAIT_S) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


async def sent(store: SqlStore, outbox_id: int, state: OutboxState = OutboxState.SENT
               ) -> OutboxMessage:
    msg = await until(lambda: finished(store, outbox_id), f"outbox {outbox_id} to finish")
    assert msg.state == state, (msg.state, msg.last_error, audit_of(store, outbox_id))
    return msg


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(main())  # type: ignore[arg-type]


def run_daemon_until(daemon: Daemon, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``daemon`` until it is ready, await ``work`` (waiting for what the test wants
    to see), then stop the daemon as a signal would; what ``work`` returned."""

    async def main() -> T:
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        try:
            await asyncio.wait_for(daemon.ready.wait(), WAIT_S)
            return await work()
        finally:
            stop.set()
            await task

    return asyncio.run(main())


# -- a worker under test -------------------------------------------------------------------


def settings(**kw: Any) -> DaemonSettings:
    values: dict[str, Any] = {
        "store_url": "unused", "worker_id": f"test-{uuid.uuid4().hex[:8]}", "claim_batch": 20,
        "lease_seconds": 10.0, "poll_interval_seconds": 0.02, "reload_interval_seconds": 0.05,
        "shutdown_grace_seconds": 5.0, "health_interval_seconds": 3600.0,
    }
    values.update(kw)
    return DaemonSettings(**values)


def smtp_transport(ca_file: Path | None = None, **kw: Any) -> SmtpTransport:
    kw.setdefault("connect_timeout", 2.0)
    return SmtpTransport(ca_file=ca_file, local_hostname="client.test", **kw)


@dataclass
class RunningWorker:
    worker: Worker
    config: ConfigSource
    transport: Transport
    metrics: DaemonMetrics
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def reload(self) -> int:
        await self.config.refresh()
        return self.config.current.revision

    async def halt(self) -> None:
        self.stop.set()
        await self.task


@asynccontextmanager
async def running_worker(store: SqlStore, daemon_settings: DaemonSettings | None = None, *,
                         transport: Transport | None = None, **kw: Any
                         ) -> AsyncIterator[RunningWorker]:
    source = ConfigSource(store)
    await source.refresh()
    transport = transport or smtp_transport()
    metrics = DaemonMetrics()
    worker = Worker(store, daemon_settings or settings(), source, {"smtp": transport},
                    metrics=metrics, **kw)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    running = RunningWorker(worker, source, transport, metrics, stop, task)
    try:
        yield running
    finally:
        stop.set()
        await task
        await transport.aclose()


# -- a counting sink ----------------------------------------------------------------------------


@dataclass
class Arrival:
    message_id: str
    subject: str
    rcpt_tos: list[str]


@dataclass
class _CountingHandler:
    delay: float = 0.0
    arrivals: list[Arrival] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        raw = envelope.original_content or b""
        parsed = email.message_from_bytes(raw, policy=default_policy)
        with self.lock:
            self.arrivals.append(Arrival(str(parsed["Message-ID"]), str(parsed["Subject"]),
                                         list(envelope.rcpt_tos)))
        return "250 2.0.0 queued"


class CountingSink:
    """aiosmtpd on 127.0.0.1 that keeps Message-ID and Subject of every message."""

    def __init__(self, delay: float = 0.0) -> None:
        from peers.smtp import free_port

        self.handler = _CountingHandler(delay)
        self.port = free_port()
        self._controller = Controller(self.handler, hostname=HOST, port=self.port,
                                      ready_timeout=WAIT_S)

    def __enter__(self) -> CountingSink:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

    def arrivals(self) -> list[Arrival]:
        with self.handler.lock:
            return list(self.handler.arrivals)

    def count(self) -> int:
        return len(self.handler.arrivals)

    def message_ids(self) -> Counter[str]:
        return Counter(a.message_id for a in self.arrivals())


# -- reconcile as a process ---------------------------------------------------------------------


def reconcile(*args: str | Path, env: dict[str, str] | None = None,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)


def daemon_process(store_url: str, *args: str, log: Path,
                   env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    from peers.smtp import free_port

    command = [sys.executable, "-m", "reconciler", "daemon", "--store", store_url,
               "--listen", f"{HOST}:{free_port()}", *args]
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})


def write_config(directory: Path, *documents: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.yaml"):
        old.unlink()
    (directory / "config.yaml").write_text("\n---\n".join(documents))
    return directory


def server_yaml(name: str, port: int, *, security: str = "none", primary: bool = True,
                namespace: str = NS, extra: str = "") -> str:
    labels = "  labels: {env: dev}\n" if security == "none" else ""
    return (
        f"apiVersion: {API}\nkind: OutgoingServer\nmetadata:\n  name: {name}\n"
        f"  namespace: {namespace}\n{labels}spec:\n  email: {name}@desk.example\n"
        f"  replyTo: support@desk.example\n  host: {HOST}\n  port: {port}\n"
        f"  security: {security}\n  primary: {'true' if primary else 'false'}\n"
        f"  timeoutSeconds: 5\n{extra}"
    )
