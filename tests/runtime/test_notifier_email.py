"""Admin notifications by email (O9): health transitions of a namespace's servers are
mailed to MailSettings.adminNotifications.emails through the outbox, delivered by the
real worker to real aiosmtpd peers, on SQLite and PostgreSQL; never through the server
that is down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from health.kit import NAMESPACE, canonical, key_of, monitor_for
from peers.smtp import SmtpPeer, free_port, server_spec

from reconciler.config.desired import CanonicalResource, ResourceKey
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.dispatch.worker import Worker
from reconciler.health.monitor import HealthMonitor
from reconciler.mail.failover import HostSelector
from reconciler.mail.smtp.transport import SmtpTransport
from reconciler.runtime.live_config import ConfigHolder, ConfigSource
from reconciler.runtime.metrics import DaemonMetrics
from reconciler.runtime.notifier import RECOVERED, AdminMail, Notifier, Transition
from reconciler.runtime.settings import DaemonSettings
from reconciler.state import Action, Change, RevisionMeta, SqlStore
from reconciler.state.base import AuditStatus, OutboxState, RoutingSnapshot

PeerFactory = Callable[..., SmtpPeer]
ADMINS = ["ops@corp.example", "noc@corp.example"]
WAIT_S = 30.0


def apply(store: SqlStore, *servers: OutgoingServer, admins: list[str] | None = None) -> None:
    resources = [canonical(s) for s in servers]
    if admins is not None:
        resources.append(CanonicalResource.build(
            ResourceKey("MailSettings", NAMESPACE, "settings"), "reconciler.dev/v1",
            {"adminNotifications": {"emails": admins}}, None))
    store.commit([Change(Action.CREATE, r.key, None, r) for r in resources],
                 RevisionMeta(actor="ci-bot"), base_revision=store.head())


def mailing_monitor(store: SqlStore, store_url: str) -> HealthMonitor:
    """The kit's monitor, notifying through AdminMail as the daemon wires it."""
    plain = monitor_for(store, store_url)
    return HealthMonitor(store, plain._settings, DaemonMetrics(), holder_of(store),
                         HostSelector(), Notifier(mail=AdminMail(store, holder_of(store))),
                         probe_options=plain._options)


def holder_of(store: SqlStore) -> ConfigHolder:
    holder = ConfigHolder()
    holder.refresh(store)
    return holder


async def deliver(store: SqlStore, store_url: str, peer: SmtpPeer, count: int = 1) -> None:
    """Run the real worker until ``peer`` has received ``count`` messages."""
    source = ConfigSource(store)
    await source.refresh()
    transport = SmtpTransport(local_hostname="client.test", connect_timeout=30.0)
    settings = DaemonSettings(store_url=store_url, worker_id="mailer", poll_interval_seconds=0.02)
    stop = asyncio.Event()
    task = asyncio.create_task(Worker(store, settings, source, {"smtp": transport}).run(stop))
    try:
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while len(peer.messages) < count:
            assert asyncio.get_running_loop().time() < deadline, "the admin mail never arrived"
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task
        await transport.aclose()


def only_message(store: SqlStore) -> Any:
    [message] = [m for m in (store.outbox.get(i) for i in range(1, 50)) if m is not None]
    return message


async def test_an_unreachable_primary_is_mailed_through_another_server(
    store: SqlStore, store_url: str, peer_factory: PeerFactory
) -> None:
    backup_peer = peer_factory("plain")
    primary = server_spec(free_port(), "plain", "main")  # nobody listens there
    backup = backup_peer.server("backup", primary=False)
    apply(store, primary, backup, admins=ADMINS)
    monitor = mailing_monitor(store, store_url)

    cycle = await monitor.probe_once()
    assert [(t.key.name, t.event) for t in cycle.transitions] == [("main", "unreachable")]
    queued = only_message(store)
    assert queued.routing == RoutingSnapshot(store.head(), "backup")
    await deliver(store, store_url, backup_peer)

    [received] = backup_peer.messages
    assert sorted(received.rcpt_tos) == sorted(ADMINS)
    mail = received.message
    assert mail["Subject"].startswith(
        "[reconcile] outgoing server default/main is Unreachable: tcp: connection refused by")
    lines = mail.get_body(("plain",)).get_content().splitlines()
    assert "Server: default/main" in lines and "Status: Unknown -> Unreachable" in lines
    text = "\n".join(lines)
    assert "tcp: connection refused" in text and "Failed step: tcp" in text
    done = store.outbox.get(queued.id)
    assert done is not None and done.state == OutboxState.SENT
    sent = [e for e in store.audit.search(outbox_id=queued.id)
            if e.status == AuditStatus.SENT]
    assert {(e.server, e.recipient) for e in sent} == {("backup", a) for a in ADMINS}

    # The same outage is no news: the next cycles queue nothing more.
    await monitor.probe_once()
    assert only_message(store).id == queued.id


async def test_a_recovery_is_mailed_through_the_primary(
    store: SqlStore, store_url: str, peer_factory: PeerFactory
) -> None:
    primary_peer = peer_factory("plain")
    apply(store, primary_peer.server("main"), admins=["ops@corp.example"])
    mail = AdminMail(store, holder_of(store))
    transition = Transition(key_of(primary_peer.server("main")), RECOVERED, "Unreachable",
                            "Reachable", datetime.now(UTC))

    assert await Notifier(mail=mail).notify(transition)
    await deliver(store, store_url, primary_peer)

    [received] = primary_peer.messages
    assert received.rcpt_tos == ["ops@corp.example"]
    assert received.message["Subject"] == (
        "[reconcile] outgoing server default/main is Reachable again (via main host)")
    assert only_message(store).routing.server == "main"


async def test_with_no_other_server_the_outage_is_only_logged(
    store: SqlStore, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reconciler")
    apply(store, server_spec(free_port(), "plain", "main"), admins=ADMINS)
    monitor = mailing_monitor(store, store_url)

    cycle = await monitor.probe_once()

    assert [t.event for t in cycle.transitions] == ["unreachable"]
    assert store.outbox.depth()[OutboxState.QUEUED] == 0  # not queued through the dead server
    assert "no enabled outgoing server other than the one that is down" in caplog.text
    assert "outgoing server default/main is Unreachable" in caplog.text


async def test_without_admin_addresses_nothing_is_queued(
    store: SqlStore, store_url: str, peer_factory: PeerFactory
) -> None:
    backup = peer_factory("plain").server("backup", primary=False)
    apply(store, server_spec(free_port(), "plain", "main"), backup)  # no MailSettings
    monitor = mailing_monitor(store, store_url)

    cycle = await monitor.probe_once()

    assert [t.event for t in cycle.transitions] == ["unreachable"]
    assert store.outbox.depth()[OutboxState.QUEUED] == 0
