"""A blocked attachment (I5) through the real runner: the ticket is made without the file,
ATTACHMENT_PROCESSED_FAILED is audited, and the sender and the admins are told by a mail
that the real worker sends through a real aiosmtpd peer."""
# Fixtures are imported from the kits (no conftest of our own), so parameters
# named like them look like redefinitions to ruff.
# ruff: noqa: F811

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from daemon.app_kit import resource, running_worker, smtp_server, until
from peers.dovecot import DovecotInstance, MailUser
from peers.smtp import PeerCerts, SmtpPeer

from reconciler.incoming.store import IncomingStore
from reconciler.state import SqlStore
from reconciler.state.base import AuditDirection, AuditStatus, OutboxState

from .incoming_kit import (
    corpus,
    incoming_server,
    password,  # noqa: F401 - fixture
    put_config,
    running,
)

ADMINS = ["ops@corp.example"]


@pytest.fixture
def peer() -> Iterator[SmtpPeer]:
    with SmtpPeer("plain") as started:
        yield started


async def test_a_blocked_attachment_is_stripped_audited_and_the_sender_told(
        store: SqlStore, dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts,
        password: str, peer: SmtpPeer) -> None:
    put_config(
        store, incoming_server(dovecot, mailbox), smtp_server("desk", peer.port, primary=True),
        resource("MailSettings", "settings", {
            "emailToRequest": True, "guestTickets": True,
            "adminNotifications": {"emails": ADMINS}}))
    dovecot.deliver(mailbox, corpus("14-attachment-exe.eml"))
    incoming = IncomingStore.of_store(store)
    async with running(store, certs.ca_file) as runner:
        await runner.wait_for(lambda: len(incoming.events()) == 1)

    [stored] = incoming.events()
    event = json.loads(stored.payload)
    assert event["kind"] == "create" and event["attachments"] == []
    entries = store.audit.search(direction=AuditDirection.INCOMING, server="support")
    [stripped] = [e for e in entries if e.status == AuditStatus.ATTACHMENT_PROCESSED_FAILED]
    assert "setup.exe" in stripped.reason
    assert [e.status for e in reversed(entries)][-1] == AuditStatus.PROCESSED

    # the notice waits in the outbox like any notification, then the worker sends it
    assert store.outbox.depth()[OutboxState.QUEUED] == 1
    async with running_worker(store):
        await until(lambda: peer.messages, "the notice to arrive")
    [notice] = peer.messages
    assert sorted(notice.rcpt_tos) == sorted(["jane@acme.example", *ADMINS])
    body = notice.message.get_body(("plain",))
    assert body is not None and "setup.exe" in body.get_content()
    sent = store.audit.search(status=AuditStatus.SENT, direction=AuditDirection.OUTGOING)
    assert {e.recipient for e in sent} == {"jane@acme.example", *ADMINS}
    assert {e.module for e in sent} == {"incoming"}


async def test_with_the_notice_switched_off_the_attachment_is_stripped_silently(
        store: SqlStore, dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts,
        password: str) -> None:
    put_config(store, incoming_server(dovecot, mailbox), resource("MailSettings", "settings", {
        "guestTickets": True, "adminNotifications": {"emails": ADMINS},
        "incomingNotices": {"strippedAttachments": False}}))
    dovecot.deliver(mailbox, corpus("14-attachment-exe.eml"))
    incoming = IncomingStore.of_store(store)
    async with running(store, certs.ca_file) as runner:
        await runner.wait_for(lambda: len(incoming.events()) == 1)
    assert json.loads(incoming.events()[0].payload)["attachments"] == []
    entries = store.audit.search(direction=AuditDirection.INCOMING, server="support")
    assert AuditStatus.ATTACHMENT_PROCESSED_FAILED in {e.status for e in entries}
    assert store.outbox.depth()[OutboxState.QUEUED] == 0
