"""Shared by the runner, store, sink, CLI and events-API tests: config in the store
pointing at the session's Dovecot, corpus mails, a runner in the test's loop, and an
HTTP receiver that records what webhooks POST."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
from daemon.app_kit import commit, resource
from peers.dovecot import DovecotInstance, MailUser
from peers.webhook import PostReceiver

from reconciler.config.desired import CanonicalResource
from reconciler.incoming.runner import IncomingRunner, RunnerOptions
from reconciler.incoming.store import IncomingStore, JudgedMail
from reconciler.state import SqlStore

MAIL = Path(__file__).resolve().parents[1] / "data" / "mail"
PASSWORD_ENV = "INCOMING_RUNNER_PASSWORD"
SEAL_KEY = b"9LDp2N2tYxQGQqBt4Kc1nM4tqJ5xTQpGXNQ3c8bGm0Y="  # a Fernet key for the tests
NS = "default"


def corpus(name: str) -> bytes:
    return (MAIL / name).read_bytes()


def incoming_server(dovecot: DovecotInstance, user: MailUser, name: str = "support", *,
                    port: int | None = None, **spec: Any) -> CanonicalResource:
    body: dict[str, Any] = {
        "email": "support@acme.example", "protocol": "imaps", "host": "127.0.0.1",
        "port": port if port is not None else dovecot.imaps,
        "auth": {"type": "basic", "username": user.name,
                 "password": {"secretRef": f"env:{PASSWORD_ENV}"}},
        "errorFolder": {"enabled": True, "name": "desk-errors"},
    }
    body.update(spec)
    return resource("IncomingServer", name, body)


def settings(**spec: Any) -> CanonicalResource:
    body: dict[str, Any] = {"emailToRequest": True, "guestTickets": True}
    body.update(spec)
    return resource("MailSettings", "settings", body)


def put_config(store: SqlStore, *resources: CanonicalResource) -> int:
    return commit(store, *resources)


def options(**kw: Any) -> RunnerOptions:
    base: dict[str, Any] = {"interval_override": 0.2, "reload_interval_seconds": 0.1,
                            "pause_poll_seconds": 0.05, "lease_seconds": 30.0}
    base.update(kw)
    return RunnerOptions(**base)


@asynccontextmanager
async def running(store: SqlStore, ca_file: Path, *, owner: str = "test-daemon",
                  notifier: Any = None, seal_key: bytes | None = SEAL_KEY,
                  **kw: Any) -> AsyncIterator[IncomingRunner]:
    """A runner in this event loop until the block ends (a graceful stop)."""
    incoming = IncomingStore.of_store(store, seal_key)
    opts = kw.pop("options", None) or options()
    runner = IncomingRunner(store, incoming, owner=owner, notifier=notifier,
                            ca_file=str(ca_file), options=opts, **kw)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        yield runner
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def loop_of(runner: IncomingRunner, name: str = "support") -> Any:
    return runner.loops.get((NS, name))


@dataclass
class Receiver(PostReceiver):
    """Records each accepted POST as (headers, raw body)."""

    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    path: ClassVar[str] = "/desk/events?token=sink-token-4711"

    def record(self, headers: dict[str, str], body: bytes) -> None:
        self.received.append((headers, body))

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(body) for _, body in self.received]


@pytest.fixture
def password(monkeypatch: pytest.MonkeyPatch, mailbox: MailUser) -> str:
    monkeypatch.setenv(PASSWORD_ENV, mailbox.password)
    return mailbox.password


def pipeline_context(store: SqlStore, name: str = "support", **spec: Any) -> Any:
    """The PipelineContext the runner would build, backed by ``store``'s lookups."""
    from reconciler.config.models import KINDS
    from reconciler.incoming.pipeline.context import PipelineContext

    body: dict[str, Any] = {"email": "support@acme.example", "protocol": "imaps",
                            "host": "imap.acme.example"}
    body.update(spec)
    server = KINDS["IncomingServer"].model_validate({
        "apiVersion": "reconciler.dev/v1", "kind": "IncomingServer",
        "metadata": {"name": name, "namespace": NS}, "spec": body})
    mail_settings = KINDS["MailSettings"].model_validate({
        "apiVersion": "reconciler.dev/v1", "kind": "MailSettings",
        "metadata": {"name": "settings", "namespace": NS},
        "spec": {"guestTickets": True}})
    incoming = IncomingStore.of_store(store)
    return PipelineContext.from_resources(
        server, [server, mail_settings],
        seen_message_id=lambda m: incoming.seen_message_id(NS, m),
        thread_lookup=lambda ids: incoming.thread_lookup(NS, ids))


def record_mail(store: SqlStore, raw: bytes, marker: str, *, name: str = "support",
                seal_key: bytes | None = SEAL_KEY, to_error_folder: bool = False) -> Any:
    """Judge ``raw`` with the real pipeline and record it as the runner does."""
    from reconciler.incoming.pipeline.run import process

    result = process(raw, pipeline_context(store, name))
    [done] = IncomingStore.of_store(store, seal_key).record_many(
        NS, name, [JudgedMail(marker, result, raw, to_error_folder)])
    return done, result


async def until(predicate: Any, timeout: float = 30.0) -> None:
    """Poll ``predicate`` until it holds (a wait, never an assertion on time)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("the condition did not come true")
        await asyncio.sleep(0.05)
