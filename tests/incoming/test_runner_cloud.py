"""The real runner fetching from the EWS and Microsoft Graph peers (tests/peers/ews_server.py,
graph_mailbox.py): mail becomes an event and is marked read; a mail the pipeline cannot
read goes to the error folder. Same loop as IMAP; only the fetcher differs."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from daemon.app_kit import resource
from peers.ews_server import EwsPeer
from peers.graph_server import TOKEN, GraphPeer
from peers.smtp import PeerCerts
from peers.tokens import Tokens

from reconciler.incoming.store import IncomingStore
from reconciler.state import SqlStore
from reconciler.state.base import AuditStatus

from .incoming_kit import NS, corpus, put_config, running, settings

EWS_USER = "desk-reader"
EWS_PASSWORD = "ews-runner-Pa55-never-logged"
EWS_PASSWORD_ENV = "INCOMING_RUNNER_EWS_PASSWORD"
DESK = "support@acme.example"  # the corpus mails are addressed to it
ERRORS = {"enabled": True, "name": "desk-errors"}


@pytest.fixture
def ews(certs: PeerCerts, monkeypatch: pytest.MonkeyPatch) -> Iterator[EwsPeer]:
    monkeypatch.setenv(EWS_PASSWORD_ENV, EWS_PASSWORD)
    with EwsPeer(certs, user=EWS_USER, password=EWS_PASSWORD) as peer:
        yield peer


@pytest.fixture
def graph(certs: PeerCerts) -> Iterator[GraphPeer]:
    with GraphPeer(certs, mailboxes=(DESK,)) as peer:
        yield peer


def unreadable() -> bytes:
    return corpus("49-no-from.eml")  # no From: the pipeline sends it to the error folder


def events_of(store: SqlStore) -> list[dict[str, Any]]:
    return [json.loads(e.payload) for e in IncomingStore.of_store(store).events()]


def audited(store: SqlStore, server: str) -> list[AuditStatus]:
    return [e.status for e in reversed(store.audit.search(server=server, limit=None))]


async def test_ews_mail_becomes_an_event_and_is_marked_read(
        store: SqlStore, ews: EwsPeer, certs: PeerCerts) -> None:
    put_config(store, settings(), resource("IncomingServer", "ews-in", {
        "email": DESK, "protocol": "ews", "host": "localhost", "ewsUrl": ews.url,
        "auth": {"type": "basic", "username": EWS_USER,
                 "password": {"secretRef": f"env:{EWS_PASSWORD_ENV}"}},
        "errorFolder": ERRORS}))
    good = ews.deliver(corpus("01-new-request-plain.eml"))
    ews.deliver(unreadable())
    incoming = IncomingStore.of_store(store)
    async with running(store, certs.ca_file) as runner:
        await runner.wait_for(lambda: len(ews.items("desk-errors")) == 1
                              and incoming.server_state(NS, "ews-in").error_folder_count == 1)
    [event] = events_of(store)
    assert (event["kind"], event["server"]) == ("create", "ews-in")
    [left] = ews.items()
    assert left.item_id == good and left.is_read
    assert ews.items("desk-errors")[0].mime == unreadable()
    assert [e.code for e in incoming.errors(NS, "ews-in")] == ["no-sender"]
    assert audited(store, "ews-in").count(AuditStatus.PROCESSED) == 1
    assert AuditStatus.PROCESSED_FAILED in audited(store, "ews-in")


async def test_graph_mail_becomes_an_event_and_is_marked_read(
        store: SqlStore, graph: GraphPeer, certs: PeerCerts) -> None:
    put_config(store, settings(), resource("IncomingServer", "graph-in", {
        "email": DESK, "protocol": "graph", "graphEndpoint": graph.endpoint,
        "auth": {"type": "oauth2", "provider": "microsoft", "grant": "clientCredentials",
                 "clientId": "11111111-2222-3333-4444-555555555555", "tenant": "corp"},
        "errorFolder": ERRORS}))
    good = graph.store.deliver(DESK, corpus("01-new-request-plain.eml"))
    graph.store.deliver(DESK, unreadable())
    incoming = IncomingStore.of_store(store)
    async with running(store, certs.ca_file, token_provider=Tokens(TOKEN)) as runner:
        await runner.wait_for(
            lambda: len(graph.store.messages(DESK, "desk-errors")) == 1
            and incoming.server_state(NS, "graph-in").error_folder_count == 1)
    [event] = events_of(store)
    assert (event["kind"], event["server"]) == ("create", "graph-in")
    [left] = graph.store.messages(DESK)
    assert left.id == good and left.is_read
    assert graph.store.messages(DESK, "desk-errors")[0].mime == unreadable()
    assert [e.code for e in incoming.errors(NS, "graph-in")] == ["no-sender"]
    assert audited(store, "graph-in").count(AuditStatus.PROCESSED) == 1
    assert set(graph.tokens_seen) == {TOKEN}
