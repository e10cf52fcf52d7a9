"""Guest tickets off (the default) hold without a daemon flag (I11): the namespace's
SenderDirectory resources say who the desk's users are; with none (and no daemon file)
the server is not fetched, and its state and the log say why and how to fix it."""
# Fixtures are imported from the kits (no conftest of our own), so parameters
# named like them look like redefinitions to ruff.
# ruff: noqa: F811

from __future__ import annotations

import json
import logging

import pytest
from daemon.app_kit import resource
from peers.dovecot import DovecotInstance, MailUser
from peers.smtp import PeerCerts

from reconciler.incoming.store import IncomingStore
from reconciler.state import SqlStore
from reconciler.state.base import AuditDirection, AuditStatus

from .incoming_kit import (
    NS,
    corpus,
    incoming_server,
    loop_of,
    password,  # noqa: F401 - fixture
    put_config,
    running,
    settings,
    until,
)

STRANGER = (b"From: Sam Stranger <sam@elsewhere.example>\r\nTo: support@acme.example\r\n"
            b"Subject: Please give me access\r\nMessage-ID: <guest-1@elsewhere.example>\r\n"
            b"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\n\r\nHello desk.\r\n")


async def test_without_a_directory_the_server_waits_and_with_one_guests_are_refused(
        store: SqlStore, dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts,
        password: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="reconciler.incoming")
    server = incoming_server(dovecot, mailbox)
    put_config(store, server, settings(guestTickets=False))
    dovecot.deliver(mailbox, corpus("01-new-request-plain.eml"))
    dovecot.deliver(mailbox, STRANGER)
    incoming = IncomingStore.of_store(store)
    async with running(store, certs.ca_file) as runner:
        await until(lambda: bool(incoming.server_state(NS, "support").paused))
        paused = str(incoming.server_state(NS, "support").paused)
        assert "guestTickets is off" in paused and "SenderDirectory" in paused
        assert "--sender-directory" in caplog.text and incoming.events() == []

        put_config(store, server, settings(guestTickets=False), resource(
            "SenderDirectory", "staff", {"users": [{"email": "JANE@acme.example"}]}))
        await runner.wait_for(lambda: loop_of(runner) is not None
                              and loop_of(runner).processed >= 2)  # a new loop cycles
    [event] = [json.loads(e.payload) for e in incoming.events()]
    assert event["kind"] == "create" and event["requester"]["email"] == "jane@acme.example"
    entries = store.audit.search(direction=AuditDirection.INCOMING, server="support")
    [refused] = [e for e in entries if e.status == AuditStatus.PROCESSED_FAILED]
    assert "sam@elsewhere.example is not a user of the desk" in refused.reason
    assert incoming.server_state(NS, "support").paused is None
