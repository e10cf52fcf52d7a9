"""The Graph incoming connection check (SPEC I9) against the local Graph: every step,
read-only; a refused token (401) at AUTH, a missing folder at Folder, a closed port at TCP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from peers.dovecot import sample_mail
from peers.graph_server import TOKEN, GraphPeer
from peers.smtp import HOST, PeerCerts, free_port
from peers.tokens import Tokens

from reconciler.health.probes import probe_incoming
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.steps import Step

from .test_fetcher import DESK, incoming


@pytest.fixture
def graph(certs: PeerCerts) -> Iterator[GraphPeer]:
    with GraphPeer(certs, mailboxes=(DESK,)) as peer:
        yield peer


def options(certs: PeerCerts, token: str = TOKEN) -> ProbeOptions:
    return ProbeOptions(ca_file=certs.ca_file, token_provider=Tokens(token))


async def test_every_step_passes_and_nothing_is_marked_read(graph: GraphPeer,
                                                            certs: PeerCerts) -> None:
    graph.store.deliver(DESK, sample_mail(1))
    graph.store.deliver(DESK, sample_mail(2), read=True)
    report = await probe_incoming(incoming(graph), options(certs))
    assert report.ok, report.error
    said = {r.step: r.detail for r in report.results}
    assert list(said) == [Step.DNS, Step.TCP, Step.TLS, Step.AUTH, Step.FOLDER, Step.COUNT,
                          Step.SAMPLE]
    assert said[Step.AUTH].startswith(f"access token accepted for {DESK} (oauth2 ")
    assert said[Step.COUNT] == "2 message(s), 1 unread (the daemon fetches unread mail)"
    assert said[Step.SAMPLE].startswith("newest message: From customer@example.test; "
                                        "Subject Request 2; Date ")
    assert [m.is_read for m in graph.store.messages(DESK)] == [False, True]
    assert TOKEN not in " ".join(said.values())


async def test_a_refused_token_fails_at_auth(graph: GraphPeer, certs: PeerCerts) -> None:
    report = await probe_incoming(incoming(graph), options(certs, "tok-WRONG-planted"))
    failed = report.failed
    assert failed is not None and failed.step == Step.AUTH
    assert "401" in failed.detail and failed.fix
    assert report.not_run == (Step.FOLDER, Step.COUNT, Step.SAMPLE)
    assert "tok-WRONG-planted" not in failed.detail + failed.fix


async def test_a_missing_folder_fails_at_folder(graph: GraphPeer, certs: PeerCerts) -> None:
    graph.store.add_folder(DESK, "Support", parent="inbox")
    report = await probe_incoming(incoming(graph, folder="Inbox/Tickets"), options(certs))
    failed = report.failed
    assert failed is not None and failed.step == Step.FOLDER
    assert "; the mailbox has: " in failed.detail and "Inbox/Support" in failed.detail
    assert f"the mailbox {DESK} has no folder Inbox/Tickets" in failed.detail
    assert failed.fix.startswith("Check folder in the incoming server spec")


async def test_a_closed_port_fails_at_tcp(graph: GraphPeer, certs: PeerCerts) -> None:
    port = free_port()
    server = incoming(graph, graphEndpoint=f"https://{HOST}:{port}")
    report = await probe_incoming(server, options(certs))
    assert [(r.step, r.ok) for r in report.results] == [(Step.DNS, True), (Step.TCP, False)]
    assert f"connection refused by {HOST}:{port}" in report.results[1].detail
