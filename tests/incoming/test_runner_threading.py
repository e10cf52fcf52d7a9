"""Replies to the desk's own notifications thread to their ticket by In-Reply-To /
References, without a ##RE-123## subject: the notification is sent through a real
aiosmtpd peer by the real worker, the reply fetched from Dovecot by the real runner."""
# Fixtures are imported from the kits (no conftest of our own), so parameters
# named like them look like redefinitions to ruff.
# ruff: noqa: F811

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from daemon.app_kit import enqueue, note, resource, running_worker, sent, smtp_server
from peers.dovecot import DovecotInstance, MailUser
from peers.smtp import PeerCerts, SmtpPeer

from reconciler.incoming.store import IncomingStore
from reconciler.state import SqlStore
from reconciler.state.base import AuditStatus

from .incoming_kit import (
    NS,
    incoming_server,
    password,  # noqa: F401 - fixture
    put_config,
    running,
)


@pytest.fixture
def peer() -> Iterator[SmtpPeer]:
    with SmtpPeer("plain") as started:
        yield started


def reply_to(message_id: str, n: int) -> bytes:
    """A requester's answer whose subject lost the ticket marker (mail clients do that)."""
    return (f"From: Jane Doe <jane@corp.example>\r\nTo: support@acme.example\r\n"
            f"Subject: Re: about your laptop\r\nMessage-ID: <reply-{n}@corp.example>\r\n"
            f"In-Reply-To: {message_id}\r\nReferences: {message_id}\r\n"
            f"Date: Mon, 6 May 2024 10:0{n}:00 +0000\r\n\r\nThanks, it works again.\r\n"
            ).encode()


async def test_a_reply_to_a_sent_notification_threads_to_its_ticket(
        store: SqlStore, dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts,
        password: str, peer: SmtpPeer) -> None:
    put_config(
        store, smtp_server("desk", peer.port, primary=True),
        incoming_server(dovecot, mailbox),
        resource("MailSettings", "settings", {"emailToRequest": True, "guestTickets": True}))
    with_ticket = enqueue(store, note(subject="Your laptop is ready", idempotencyKey="n-1",
                                      ticket={"module": "request", "id": "0042"}))
    without = enqueue(store, note(subject="Your laptop is ready", idempotencyKey="n-2"))
    async with running_worker(store):
        await sent(store, with_ticket)
        await sent(store, without)
    assert len(peer.messages) == 2
    ids = [str(m.message["Message-ID"]) for m in peer.messages]
    # the SENT row carries the link (written in the worker's group commit)
    [row] = store.audit.search(outbox_id=with_ticket, status=AuditStatus.SENT)
    assert row.details is not None and row.details["ticket"] == {"module": "request",
                                                                 "id": "42"}
    linked_id = row.message_id
    other_id = next(i for i in ids if i != linked_id)

    dovecot.deliver(mailbox, reply_to(linked_id, 1))
    dovecot.deliver(mailbox, reply_to(other_id, 2))
    incoming = IncomingStore.of_store(store)
    async with running(store, certs.ca_file) as runner:
        await runner.wait_for(lambda: len(incoming.events()) == 2)
    events = {e.message_id: json.loads(e.payload) for e in incoming.events()}
    threaded = events["reply-1@corp.example"]
    assert threaded["kind"] == "reply"
    assert threaded["ticket"] == {"module": "request", "number": "42", "source": "thread"}
    # a notification sent without a ticket gives its replies nothing to thread to
    assert events["reply-2@corp.example"]["kind"] == "create"
    assert events["reply-2@corp.example"]["ticket"] is None
    # and the next reply in the conversation threads through the first one's Message-ID
    assert incoming.thread_lookup(NS, ["<reply-1@corp.example>"]) == ("request", "42")


def test_links_are_per_namespace_and_only_from_sent_rows(store: SqlStore) -> None:
    from reconciler.state.base import AuditEntry

    def row(status: AuditStatus, namespace: str, message_id: str) -> AuditEntry:
        return AuditEntry(status=status, reason="x", namespace=namespace, server="desk",
                          host=None, attempt=1, recipient="jane@corp.example",
                          message_id=message_id, outbox_id=1, module="request",
                          details={"ticket": {"module": "change", "id": "7"}})

    store.audit.record([row(AuditStatus.SENT, NS, "<a@desk.example>"),
                        row(AuditStatus.SEND_FAILED, NS, "<b@desk.example>"),
                        row(AuditStatus.SENT, "acme", "<c@desk.example>")])
    incoming = IncomingStore.of_store(store)
    assert incoming.thread_lookup(NS, ["a@desk.example"]) == ("change", "7")
    assert incoming.thread_lookup(NS, ["<b@desk.example>"]) is None  # never arrived
    assert incoming.thread_lookup(NS, ["<c@desk.example>"]) is None  # another tenant's
    assert incoming.thread_lookup("acme", ["<c@desk.example>"]) == ("change", "7")
    # a link the desk made itself wins over nothing, and both kinds mix in one lookup
    incoming.link_ticket(NS, "<d@desk.example>", "request", "9")
    assert incoming.thread_lookup(NS, ["<x@nowhere>", "<d@desk.example>",
                                       "<a@desk.example>"]) == ("request", "9")
