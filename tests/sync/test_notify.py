"""Sync notifications (SPEC X5 item 7): one signed-webhook post through the health
notifier, and an admin mail per namespace concerned, queued in the outbox."""

from __future__ import annotations

import json
import logging

import pytest
from health.kit import WebhookReceiver, canonical
from peers.smtp import free_port, server_spec

from reconciler.config.desired import CanonicalResource, ResourceKey
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.runtime.live_config import ConfigHolder
from reconciler.runtime.notifier import AdminMail, Notifier
from reconciler.state import Action, Change, RevisionMeta, SqlStore
from reconciler.sync.notify import ROLLED_BACK, SUCCEEDED, SyncOutcome, notify_sync

COMMIT = "3f786850e387550fdab836ed7e6dc881de23001b"


def in_namespace(server: OutgoingServer, namespace: str) -> CanonicalResource:
    meta = server.metadata.model_copy(update={"namespace": namespace})
    return canonical(server.model_copy(update={"metadata": meta}))


def settings(namespace: str, *emails: str) -> CanonicalResource:
    return CanonicalResource.build(ResourceKey("MailSettings", namespace, "settings"),
                                   "reconciler.dev/v1",
                                   {"adminNotifications": {"emails": list(emails)}}, None)


@pytest.fixture
def notifier(store: SqlStore, webhook: WebhookReceiver) -> Notifier:
    resources = [in_namespace(server_spec(free_port(), "plain", "relay"), "default"),
                 in_namespace(server_spec(free_port(), "plain", "ops-relay"), "ops"),
                 settings("default", "desk-admin@corp.example"),
                 settings("ops", "noc@corp.example")]
    store.commit([Change(Action.CREATE, r.key, None, r) for r in resources],
                 RevisionMeta(actor="ci-bot"), base_revision=0)
    holder = ConfigHolder()
    holder.refresh(store)
    return Notifier(webhook.url, backoff_seconds=0.01, mail=AdminMail(store, holder))


def queued(store: SqlStore) -> list[dict[str, object]]:
    rows = [m for m in (store.outbox.get(i) for i in range(1, 20)) if m is not None]
    return [{"server": m.routing.server, **store.outbox.notification(m.id)} for m in rows]


async def test_rollback_reaches_the_webhook_once_and_each_namespaces_admins(
        store: SqlStore, webhook: WebhookReceiver, notifier: Notifier,
        caplog: pytest.LogCaptureFixture) -> None:
    outcome = SyncOutcome(ROLLED_BACK, COMMIT, "OutgoingServer/ops/ops-relay unreachable after "
                          "the apply: tcp: connection refused", namespaces=["ops", "default"],
                          revision=7, failed_step="tcp",
                          resources=["OutgoingServer/ops/ops-relay"])
    with caplog.at_level(logging.INFO):
        assert await notify_sync(notifier, outcome)
    [posted] = webhook.received
    assert posted["event"] == "sync.rolled-back" and posted["commit"] == COMMIT
    assert posted["state"] == "Degraded" and posted["revision"] == 7
    assert posted["failedStep"] == "tcp" and posted["namespaces"] == ["ops", "default"]
    mails = sorted(queued(store), key=lambda m: str(m["server"]))
    assert [(m["server"], m["to"], m["module"]) for m in mails] == [
        ("ops-relay", ["noc@corp.example"], "sync"),
        ("relay", ["desk-admin@corp.example"], "sync")]
    assert mails[0]["subject"] == ("[reconcile] sync of commit 3f786850e387 was rolled back: "
                                   "OutgoingServer/ops/ops-relay unreachable after the apply: "
                                   "tcp: connection refused")
    body = str(mails[0]["textBody"])
    assert f"Commit: {COMMIT}" in body and "Failed step: tcp" in body and "Revision: 7" in body
    assert any(r.levelno == logging.WARNING and "rolled back" in r.getMessage()
               for r in caplog.records)


async def test_success_with_no_namespace_posts_and_mails_nobody(
        store: SqlStore, webhook: WebhookReceiver, notifier: Notifier) -> None:
    assert await notify_sync(notifier, SyncOutcome(SUCCEEDED, COMMIT, "applied as revision 2",
                                                   revision=2))
    assert [p["event"] for p in webhook.received] == ["sync.succeeded"]
    assert json.dumps(webhook.received[0]["namespaces"]) == "[]"
    assert queued(store) == []
