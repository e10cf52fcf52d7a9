"""Connection failures (I7): counted per server, one notice at the threshold, one on
recovery; the last error is the server's fetch state. Applies pause fetching."""
# Fixtures are imported from the kits (no conftest of our own), so parameters
# named like them look like redefinitions to ruff.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import socket

import pytest
from peers.dovecot import DovecotInstance, MailUser
from peers.smtp import PeerCerts

from reconciler.incoming.server_loop import PAUSED_APPLY
from reconciler.incoming.store import IncomingStore
from reconciler.runtime.notifier import Notifier
from reconciler.state import SqlStore

from .incoming_kit import (
    NS,
    Receiver,
    corpus,
    incoming_server,
    loop_of,
    password,  # noqa: F401 - fixture
    put_config,
    running,
    settings,
)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_five_failures_notify_once_and_recovery_notifies_again(
        store: SqlStore, dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts,
        password: str) -> None:
    put_config(store, incoming_server(dovecot, mailbox, port=closed_port()), settings())
    receiver = Receiver().start()
    incoming = IncomingStore.of_store(store)
    try:
        async with running(store, certs.ca_file, notifier=Notifier(receiver.url)) as runner:
            await runner.wait_for(
                lambda: incoming.server_state(NS, "support").consecutive_failures >= 7)
            state = incoming.server_state(NS, "support")
            assert state.last_error_kind == "connect"
            assert "nothing accepts connections" in state.last_error
            assert [b["event"] for b in receiver.bodies()] == ["incoming.unreachable"]
            [notice] = receiver.bodies()
            assert notice["server"] == "support" and "5 consecutive failures" in notice["error"]

            put_config(store, incoming_server(dovecot, mailbox), settings())
            dovecot.deliver(mailbox, corpus("01-new-request-plain.eml"))
            await runner.wait_for(lambda: len(incoming.events()) == 1)
        assert [b["event"] for b in receiver.bodies()] == ["incoming.unreachable",
                                                           "incoming.recovered"]
        assert incoming.server_state(NS, "support").consecutive_failures == 0
    finally:
        receiver.stop()


@pytest.mark.parametrize("threshold, switch", [(50, True), (2, False)],
                         ids=["below-threshold", "switched-off"])
async def test_fewer_failures_than_the_threshold_or_the_switch_off_do_not_notify(
        store: SqlStore, dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts,
        password: str, threshold: int, switch: bool) -> None:
    put_config(store, incoming_server(dovecot, mailbox, port=closed_port(),
                                      failureNotifyThreshold=threshold),
               settings(incomingNotices={"connectionFailures": switch}))
    receiver = Receiver().start()
    incoming = IncomingStore.of_store(store)
    try:
        async with running(store, certs.ca_file, notifier=Notifier(receiver.url)) as runner:
            await runner.wait_for(
                lambda: incoming.server_state(NS, "support").consecutive_failures >= 6)
        assert receiver.attempts == 0
    finally:
        receiver.stop()


async def test_an_apply_pauses_fetching_and_the_new_config_is_used_after_it(
        store: SqlStore, dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts,
        password: str) -> None:
    put_config(store, incoming_server(dovecot, mailbox), settings())
    incoming = IncomingStore.of_store(store)
    async with running(store, certs.ca_file) as runner:
        await runner.wait_for(lambda: bool(loop_of(runner)) and loop_of(runner).cycles >= 1)
        with store.lock("alice", "apply", timeout=5):
            await runner.wait_for(lambda: loop_of(runner).paused == PAUSED_APPLY)
            assert incoming.server_state(NS, "support").paused == PAUSED_APPLY
            dovecot.deliver(mailbox, corpus("01-new-request-plain.eml"))
            cycles = loop_of(runner).cycles
            await runner.wait_for(lambda: loop_of(runner).cycles >= cycles + 3)
            assert incoming.events() == []  # not fetched while the apply holds the lock
            # what the apply commits: the default ticket category changes
            put_config(store, incoming_server(dovecot, mailbox,
                                              defaults={"category": "Printers"}), settings())
        await runner.wait_for(lambda: len(incoming.events()) == 1)
        await asyncio.sleep(0)
    [event] = incoming.events()
    assert '"category":"Printers"' in event.payload
    assert incoming.server_state(NS, "support").paused is None
