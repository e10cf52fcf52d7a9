"""A notification routed to an EWS server goes through the whole daemon (outbox, worker,
the daemon's own EWS transport) into a real EWS endpoint and is audited, on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from daemon.app_kit import (
    audit_of,
    commit,
    enqueue,
    mail_settings,
    note,
    resource,
    run_daemon_until,
    sent,
    settings,
)
from dispatch.kit import USER
from peers.connect_proxy import ConnectProxy
from peers.ews_server import EwsPeer
from peers.smtp import PeerCerts, free_port

from reconciler.daemon.app import Daemon
from reconciler.state import SqlStore
from reconciler.state.base import AuditStatus, OutboxState

PASSWORD_ENV = "EWS_DAEMON_PASSWORD"
PASSWORD = "ews-daemon-Pa55-never-in-audit"


def ews_resource(peer: EwsPeer, name: str, **spec: Any) -> Any:
    body: dict[str, Any] = {
        "email": "desk@corp.example", "senderName": "IT Help Desk",
        "replyTo": "support@corp.example", "protocol": "ews", "host": "localhost",
        "port": peer.port, "ewsUrl": peer.url, "primary": True, "timeoutSeconds": 10,
        "maxConcurrency": 2, "saveToSentItems": True,
        "auth": {"type": "basic", "username": USER,
                 "password": {"secretRef": f"env:{PASSWORD_ENV}"}},
    }
    body.update(spec)
    return resource("OutgoingServer", name, body)


def ews_daemon(store: SqlStore, certs: PeerCerts) -> Daemon:
    """A daemon that builds its transports itself: that wiring is what is under test."""
    return Daemon(settings(store_url="unused", listen_port=free_port(),
                           ca_file=str(certs.ca_file)),
                  store, api=False, health=False, handle_signals=False)


def test_ews_routed_notifications_are_sent_and_audited(
        store: SqlStore, certs: PeerCerts, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    peer = EwsPeer(certs, user=USER, password=PASSWORD).start()
    try:
        commit(store, ews_resource(peer, "exchange"), mail_settings())
        peer.fail_next("CreateItem", "busy", back_off_ms=20)
        peer.refuse("ghost@corp.example")
        ok = enqueue(store, note("jane@corp.example", subject="Ticket ##RE-7## updated",
                                 cc=["ops@corp.example"]))
        daemon = ews_daemon(store, certs)

        async def work() -> int:
            await sent(store, ok)
            bad = await asyncio.to_thread(enqueue, store, note("ghost@corp.example"))
            await sent(store, bad, OutboxState.FAILED)
            return bad

        bad = run_daemon_until(daemon, work)
    finally:
        peer.stop()
    [mail] = peer.sent
    assert mail.subject == "Ticket ##RE-7## updated"
    assert mail.disposition == "SendAndSaveCopy"
    assert [a.email for a in mail.to] == ["jane@corp.example"]
    assert [a.email for a in mail.cc] == ["ops@corp.example"]
    rows = audit_of(store, ok)
    assert [(r.status, r.recipient) for r in rows] == [
        (AuditStatus.SENT, "jane@corp.example"), (AuditStatus.SENT, "ops@corp.example")]
    assert all(r.server == "exchange" and r.message_id == mail.internet_message_id
               for r in rows)
    [failed] = audit_of(store, bad)
    assert failed.status == AuditStatus.SEND_FAILED
    assert "ErrorInvalidRecipients" in failed.reason
    every = [str(r) for r in (*rows, failed)]
    assert not any(PASSWORD in text for text in every)


def test_the_daemon_sends_through_the_proxy_the_server_names(
        store: SqlStore, certs: PeerCerts, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    peer = EwsPeer(certs, user=USER, password=PASSWORD).start()
    proxy = ConnectProxy()
    ews_port = peer.port
    try:
        commit(store, ews_resource(peer, "exchange", proxy="corp-proxy"), mail_settings(),
               resource("ProxyServer", "corp-proxy", {"host": "127.0.0.1", "port": proxy.port}))
        ok = enqueue(store, note("jane@corp.example"))
        daemon = ews_daemon(store, certs)

        run_daemon_until(daemon, lambda: sent(store, ok))
    finally:
        proxy.close()
        peer.stop()
    assert len(peer.sent) == 1
    assert set(proxy.tunnels) == {f"localhost:{ews_port}"}
