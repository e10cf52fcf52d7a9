"""Builders shared by the health tests (and the status / test-connection CLI tests):
servers pointing at real peers, a store holding them, a webhook receiver."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
from peers.webhook import PostReceiver

from reconciler.config.desired import CanonicalResource, ResourceKey
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.health.diagnose import likely_fix
from reconciler.health.monitor import HealthMonitor
from reconciler.mail.failover import HostSelector
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.steps import ProbeReport, Step
from reconciler.runtime.live_config import ConfigHolder
from reconciler.runtime.metrics import DaemonMetrics
from reconciler.runtime.notifier import Notifier
from reconciler.runtime.settings import DaemonSettings
from reconciler.runtime.tls import CA_FILE_ENV
from reconciler.state import Action, Change, RevisionMeta, SqlStore, Store

PASSWORD_ENV = "HEALTH_TEST_SMTP_PASSWORD"
PASSWORD = "Sw0rdf1sh-health-not-for-logs"
WRONG_ENV = "HEALTH_TEST_WRONG_PASSWORD"
WRONG = "Wr0ng-health-secret-77"
USER = "desk-sender"
NAMESPACE = "default"


def basic_auth(env: str = PASSWORD_ENV, user: str = USER) -> dict[str, Any]:
    return {"type": "basic", "username": user, "password": {"secretRef": f"env:{env}"}}


def steps(report: ProbeReport) -> list[tuple[Step, bool]]:
    """Which steps ran and whether each passed, in order."""
    return [(r.step, r.ok) for r in report.results]


def fix(report: ProbeReport, server: OutgoingServer) -> str:
    """The likely fix test-connection prints for the report's failed step."""
    assert report.failed is not None and report.endpoint is not None
    return likely_fix(report.failed, server, report.endpoint)


def key_of(server: OutgoingServer) -> ResourceKey:
    return ResourceKey(server.kind, server.metadata.namespace, server.metadata.name)


def canonical(server: OutgoingServer) -> CanonicalResource:
    spec = server.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return CanonicalResource.build(key_of(server), server.api_version, spec,
                                   server.metadata.labels)


def put_servers(store: Store, *servers: OutgoingServer, actor: str = "ci-bot") -> int:
    """Apply the servers (create or update) as one APPLY revision; the new head."""
    live = store.snapshot()
    changes = []
    for server in servers:
        after = canonical(server)
        before = live.resources.get(after.key)
        action = Action.CREATE if before is None else Action.UPDATE
        changes.append(Change(action, after.key, before, after))
    return store.commit(changes, RevisionMeta(actor=actor), base_revision=live.revision).number


def monitor_for(store: SqlStore, store_url: str, *, webhook: str | None = None,
                selector: HostSelector | None = None, worker: str = "daemon-1",
                ca_file: Path | None = None, **kw: Any) -> HealthMonitor:
    holder = ConfigHolder()
    holder.refresh(store)
    settings = DaemonSettings(store_url=store_url, notify_webhook=webhook, worker_id=worker,
                              health_interval_seconds=0.05)
    return HealthMonitor(
        store, settings, DaemonMetrics(), holder, selector or HostSelector(),
        Notifier(webhook, backoff_seconds=0.01),
        probe_options=ProbeOptions(ca_file=ca_file, timeout=5.0, local_hostname="client.test"),
        **kw)


def secret_forms(secret: str, user: str = USER) -> list[str]:
    import base64

    return [secret, base64.b64encode(secret.encode()).decode(),
            base64.b64encode(f"\0{user}\0{secret}".encode()).decode()]


def assert_no_secret(texts: Iterable[str], secret: str = PASSWORD) -> None:
    blob = "\n".join(texts)
    for form in secret_forms(secret):
        assert form not in blob, f"a form of the secret leaked: {form!r}"


# -- a webhook receiver: http.server in a thread --------------------------------


@dataclass
class WebhookReceiver(PostReceiver):
    """Records the JSON body of every accepted POST."""

    received: list[dict[str, Any]] = field(default_factory=list)

    ok_status: ClassVar[int] = 204
    path: ClassVar[str] = "/hooks/health?token=hook-secret-123"

    def record(self, headers: dict[str, str], body: bytes) -> None:
        self.received.append(json.loads(body))

    def events(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(r["event"], r["server"]) for r in self.received]


# The health and runtime (notifier) tests share this environment and receiver: each
# folder's conftest imports them, which makes them fixtures there.
@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CA_FILE_ENV, raising=False)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()
