"""The event sink (I8): the store drains to the desk's webhook in order, retrying while it
is down, signing each POST; nothing is lost and nothing overtakes."""
# Fixtures are imported from the kits (no conftest of our own), so parameters
# named like them look like redefinitions to ruff.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging

import pytest
from peers.dovecot import DovecotInstance, MailUser
from peers.smtp import PeerCerts

from reconciler.incoming.sink import EVENT_ID_HEADER, WebhookSink
from reconciler.incoming.store import IncomingStore
from reconciler.runtime.webhook import SIGNATURE_HEADER
from reconciler.state import SqlStore
from reconciler.state.contract import DELIVERED, PENDING, REJECTED

from .incoming_kit import (
    Receiver,
    corpus,
    incoming_server,
    password,  # noqa: F401 - fixture
    put_config,
    record_mail,
    running,
    settings,
    until,
)

SECRET = "whsec-test-5521"
MAILS = ("01-new-request-plain.eml", "10-alternative-text-html.eml", "11-html-only.eml")


def fill(store: SqlStore, names: tuple[str, ...] = MAILS) -> None:
    for i, name in enumerate(names):
        record_mail(store, corpus(name), f"imap:INBOX:1:{i + 1}")


def sink_for(store: SqlStore, receiver: Receiver, **kw: object) -> WebhookSink:
    return WebhookSink(IncomingStore.of_store(store), receiver.url, secret=SECRET,
                       initial_backoff_seconds=0.05, max_backoff_seconds=0.2, **kw)


async def drain(sink: WebhookSink, predicate: object) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop, poll_seconds=0.1))
    try:
        await until(predicate)
    finally:
        stop.set()
        await task


async def test_a_down_webhook_keeps_events_until_it_is_back(store: SqlStore) -> None:
    fill(store)
    receiver = Receiver(replies=[503, 503, 503, 503]).start()
    incoming = IncomingStore.of_store(store)
    try:
        sink = sink_for(store, receiver)
        await drain(sink, lambda: incoming.event_counts()[DELIVERED] == 3)
        # in order, each once, even though the first was refused four times
        ids = [int(h[EVENT_ID_HEADER]) for h, _ in receiver.received]
        assert ids == [1, 2, 3]
        assert receiver.attempts == 7
        first = incoming.event(1)
        assert first is not None and first.attempts == 5 and first.last_error == "HTTP 503"
        stored = [json.loads(e.payload) for e in incoming.events()]
        assert receiver.bodies() == stored
    finally:
        receiver.stop()


async def test_every_post_is_signed(store: SqlStore) -> None:
    fill(store, MAILS[:1])
    receiver = Receiver().start()
    try:
        await drain(sink_for(store, receiver), lambda: len(receiver.received) == 1)
        [(headers, body)] = receiver.received
        parts = dict(p.split("=", 1) for p in headers[SIGNATURE_HEADER].split(","))
        expected = hmac.new(SECRET.encode(), f"{parts['t']}.".encode() + body,
                            hashlib.sha256).hexdigest()
        assert hmac.compare_digest(parts["v1"], expected)
        assert headers["Content-Type"] == "application/json"
    finally:
        receiver.stop()


async def test_a_refused_event_is_kept_as_rejected_and_the_rest_go_on(store: SqlStore) -> None:
    fill(store)
    receiver = Receiver(replies=[422]).start()
    incoming = IncomingStore.of_store(store)
    try:
        await drain(sink_for(store, receiver), lambda: len(receiver.received) == 2)
        assert [e.state for e in incoming.events()] == [REJECTED, DELIVERED, DELIVERED]
        assert incoming.event(1).last_error == "HTTP 422"  # type: ignore[union-attr]
    finally:
        receiver.stop()


async def test_the_webhook_url_and_its_token_stay_out_of_the_logs(
        store: SqlStore, caplog: pytest.LogCaptureFixture) -> None:
    fill(store, MAILS[:1])
    receiver = Receiver(replies=[503]).start()
    caplog.set_level(logging.DEBUG)
    try:
        await drain(sink_for(store, receiver), lambda: len(receiver.received) == 1)
    finally:
        receiver.stop()
    assert "sink-token-4711" not in caplog.text
    assert SECRET not in caplog.text
    assert "not delivered (HTTP 503" in caplog.text


async def test_mail_fetched_while_the_webhook_is_down_reaches_it_later(
        store: SqlStore, dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts,
        password: str) -> None:
    put_config(store, incoming_server(dovecot, mailbox), settings())
    receiver = Receiver(down=True).start()
    incoming = IncomingStore.of_store(store)
    sink = sink_for(store, receiver)
    stop = asyncio.Event()
    sink_task = asyncio.create_task(sink.run(stop, poll_seconds=0.1))
    try:
        dovecot.deliver(mailbox, corpus("01-new-request-plain.eml"))
        async with running(store, certs.ca_file, on_event=sink.wake) as runner:
            await runner.wait_for(lambda: len(incoming.events()) == 1)
            # durable and marked done even though the desk has not taken it yet
            assert dovecot.doveadm("search", "-u", mailbox.name, "mailbox", "INBOX",
                                   "UNSEEN") == ""
            await until(lambda: receiver.attempts >= 2)
            assert incoming.events()[0].state == PENDING
            receiver.down = False
            await until(lambda: incoming.event_counts()[DELIVERED] == 1)
        [body] = receiver.bodies()
        assert body["kind"] == "create" and body["server"] == "support"
    finally:
        stop.set()
        await sink_task
        receiver.stop()
