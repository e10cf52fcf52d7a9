"""Admin notices about incoming servers speak of the mailbox they fetch, not of where sends
go: the mail a real runner queues after failed sessions, and each notice's text."""
# Fixtures are imported from the kits (no conftest of our own), so parameters
# named like them look like redefinitions to ruff.
# ruff: noqa: F811

from __future__ import annotations

import socket
from typing import Any

from daemon.app_kit import resource, smtp_server
from peers.dovecot import DovecotInstance, MailUser
from peers.smtp import PeerCerts

from reconciler.config.models.incoming_server import IncomingServer
from reconciler.incoming import notices
from reconciler.incoming.store import IncomingStore
from reconciler.runtime.live_config import ConfigHolder
from reconciler.runtime.notifier import AdminMail, Notifier
from reconciler.state import SqlStore

from .incoming_kit import (
    NS,
    incoming_server,
    password,  # noqa: F401 - fixture
    put_config,
    running,
)

ADMINS = ["ops@corp.example"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model(**spec: Any) -> IncomingServer:
    body: dict[str, Any] = {"email": "support@acme.example", "protocol": "imaps",
                            "host": "imap.acme.example"}
    body.update(spec)
    return IncomingServer.model_validate({
        "apiVersion": "reconciler.dev/v1", "kind": "IncomingServer",
        "metadata": {"name": "support", "namespace": NS}, "spec": body})


def queued_bodies(store: SqlStore) -> list[dict[str, Any]]:
    return [store.outbox.notification(m.id) for m in store.outbox.claim("peek", 100, 60)]


async def test_failed_sessions_mail_the_admins_about_the_mailbox(
        store: SqlStore, dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts,
        password: str) -> None:
    port = closed_port()
    put_config(
        store,
        incoming_server(dovecot, mailbox, port=port, failureNotifyThreshold=2),
        # an outgoing server of the same name: it is not the one that is down
        smtp_server("support", closed_port(), primary=True),
        resource("MailSettings", "settings", {"adminNotifications": {"emails": ADMINS},
                                              "guestTickets": True}))
    holder = ConfigHolder()
    holder.refresh(store)
    notifier = Notifier(mail=AdminMail(store, holder))
    incoming = IncomingStore.of_store(store)
    async with running(store, certs.ca_file, notifier=notifier) as runner:
        await runner.wait_for(lambda: incoming.server_state(NS, "support").failure_notified)
    [mail] = queued_bodies(store)
    assert mail["to"] == ADMINS and mail["module"] == "health"
    assert mail["subject"].startswith(
        "[reconcile] incoming server default/support cannot fetch mail: 2 consecutive")
    body = mail["textBody"]
    assert "Sends go to" not in body and "main host" not in body
    for line in ("Server: default/support (incoming)\n", "Mailbox: support@acme.example\n",
                 "Protocol: imaps\n", f"Host: 127.0.0.1:{port}\n",
                 "Status: Fetching -> Unreachable\n", "Failed sessions: 2 in a row\n",
                 "Failed step: connect\n"):
        assert line in body, body
    assert "Last error: 2 consecutive failures; last: " in body
    assert "nothing accepts connections" in body
    assert "Likely fix: " in body


def test_each_notice_names_mailbox_protocol_and_host() -> None:
    server = model(errorFolder={"enabled": True, "name": "desk-errors"})
    recovered = notices.recovered(server, 6)
    assert recovered.facts()[:5] == [
        ("Server", "default/support (incoming)"), ("Mailbox", "support@acme.example"),
        ("Protocol", "imaps"), ("Host", "imap.acme.example:993"),
        ("Status", "Unreachable -> Fetching")]
    assert ("Failed sessions", "6 before this recovery") in recovered.facts()
    assert recovered.summary() == "incoming server default/support fetches mail again"

    stopped = notices.stopped(server, 10)
    facts = dict(stopped.facts())
    assert facts["Last error"] == "the error folder desk-errors holds 10 mails (stopFetchingAfter)"
    assert "reconcile incoming retry support --namespace default" in str(facts["Likely fix"])
    assert facts["Failed sessions"] is None  # not about sessions: the line is left out

    moved = notices.moved_to_error_folder(server, "unreadable", "no header section")
    payload = moved.payload()
    assert payload["event"] == "incoming.error-folder" and "activeHost" not in payload
    assert (payload["mailbox"], payload["protocol"], payload["address"]) == (
        "support@acme.example", "imaps", "imap.acme.example:993")


def test_ews_and_graph_servers_show_their_endpoint() -> None:
    ews = model(protocol="ews", host=None, ewsUrl="https://mail.acme.example/EWS/Exchange.asmx")
    graph = model(protocol="graph", host=None)
    assert dict(notices.recovered(ews, 5).facts())["Host"] == (
        "https://mail.acme.example/EWS/Exchange.asmx")
    assert dict(notices.recovered(graph, 5).facts())["Host"] == "Microsoft Graph"
