"""A notification routed to a Graph server goes through the whole daemon (outbox, worker,
Graph transport) into the local Graph and is audited, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

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
from peers.graph_server import TOKEN, GraphPeer
from peers.smtp import PeerCerts, free_port

from reconciler.daemon.app import Daemon
from reconciler.mail.graph.transport import GraphTransport
from reconciler.state import SqlStore
from reconciler.state.base import AuditStatus, OutboxState

SECRET_TOKEN = "graph-daemon-token-Kx93-never-in-audit"


def graph_server(peer: GraphPeer, name: str, mailbox: str, **spec: Any) -> Any:
    body: dict[str, Any] = {
        "email": mailbox, "senderName": "IT Help Desk", "replyTo": "support@corp.example",
        "protocol": "graph", "graphEndpoint": peer.endpoint, "mailbox": mailbox,
        "primary": True, "timeoutSeconds": 10, "maxConcurrency": 4,
        "auth": {"type": "oauth2", "provider": "microsoft", "grant": "clientCredentials",
                 "clientId": "11111111-2222-3333-4444-555555555555", "tenant": "corp"},
    }
    body.update(spec)
    return resource("OutgoingServer", name, body)


def test_graph_routed_notifications_are_sent_and_audited(store: SqlStore,
                                                          certs: PeerCerts) -> None:
    peer = GraphPeer(certs, token=SECRET_TOKEN, mailboxes=("desk@corp.example",),
                     forbidden=()).start()
    try:
        commit(store, graph_server(peer, "m365", "desk@corp.example"), mail_settings())
        peer.fail_next(429, "ApplicationThrottled", "Slow down.", retry_after="0")
        ok = enqueue(store, note("jane@corp.example", subject="Ticket ##RE-5## updated",
                                 cc=["ops@corp.example"]))
        transport = GraphTransport(ca_file=certs.ca_file,
                                   token_provider=lambda _server: SECRET_TOKEN)
        daemon = Daemon(settings(store_url="unused", listen_port=free_port()), store,
                        transports={"graph": transport}, api=False, health=False,
                        handle_signals=False)

        async def work() -> int:
            await sent(store, ok)
            bad = await asyncio.to_thread(enqueue, store, note("invalid-recipient@corp.example"))
            await sent(store, bad, OutboxState.FAILED)
            return bad

        bad = run_daemon_until(daemon, work)
    finally:
        peer.stop()
    [mail] = [m for m in peer.sent if m.subject == "Ticket ##RE-5## updated"]
    assert mail.addresses("to") == ["jane@corp.example"]
    assert mail.addresses("cc") == ["ops@corp.example"]
    rows = audit_of(store, ok)
    assert [(r.status, r.recipient) for r in rows] == [
        (AuditStatus.SENT, "jane@corp.example"), (AuditStatus.SENT, "ops@corp.example")]
    assert all(r.server == "m365" and r.message_id == mail.message["internetMessageId"]
               for r in rows)
    assert "waited out throttling" in rows[0].reason
    [failed] = audit_of(store, bad)
    assert failed.status == AuditStatus.SEND_FAILED
    assert "400 ErrorInvalidRecipients" in failed.reason
    for row in [*rows, failed]:
        assert SECRET_TOKEN not in f"{row.reason} {row.details}"
        assert TOKEN not in f"{row.reason} {row.details}"
