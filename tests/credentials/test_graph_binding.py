"""SPEC S2 for Microsoft Graph, against two local Graph endpoints over HTTPS: an access
token of the applied OAuth client is sent only to the Graph endpoint it was applied with,
by sends and health probes alike."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from peers.graph_server import TOKEN, GraphPeer, graph_peers
from peers.smtp import PeerCerts
from peers.tokens import Tokens

from reconciler.config.desired import CanonicalResource, ResourceKey
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.credentials import gate
from reconciler.dispatch.compose import compose
from reconciler.dispatch.filters import filter_notification
from reconciler.health.diagnose import likely_fix
from reconciler.health.probes import probe_server
from reconciler.mail.envelope import Notification
from reconciler.mail.graph.transport import GraphTransport
from reconciler.mail.outcome import Failure, Outcome
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.steps import Reason, Step
from reconciler.state import Action, Change, RevisionMeta, SqlStore


@pytest.fixture
def graph(certs: PeerCerts) -> Iterator[Callable[..., GraphPeer]]:
    with graph_peers(certs) as make:
        yield make


def applied(store: SqlStore, server: OutgoingServer) -> None:
    spec = server.spec.model_dump(by_alias=True, mode="json", exclude_none=True)
    res = CanonicalResource.build(ResourceKey("OutgoingServer", "default", "graph"),
                                  "reconciler.dev/v1", spec, None)
    store.commit([Change(Action.CREATE, res.key, None, res)], RevisionMeta(actor="dana"),
                 base_revision=0)
    gate.load(store)


async def send(certs: PeerCerts, server: OutgoingServer) -> Any:
    note = Notification.model_validate({"module": "request", "to": ["jane@corp.example"],
                                        "subject": "Request ##RE-7##", "textBody": "hello"})
    transport = GraphTransport(ca_file=certs.ca_file, token_provider=Tokens(TOKEN))
    try:
        return await transport.send(compose(note, server, filter_notification(note, None)),
                                    server)
    finally:
        await transport.aclose()


async def test_a_token_goes_only_to_the_bound_graph_endpoint(
        graph: Callable[..., GraphPeer], certs: PeerCerts, store: SqlStore) -> None:
    bound, other = graph(), graph()
    applied(store, bound.server())

    moved = other.server()  # same client, another endpoint: as a live set would leave it
    result = await send(certs, moved)
    assert result.outcome is Outcome.PERMANENT and result.failure is Failure.CONFIG
    assert f"not bound to 127.0.0.1:{other.port}" in result.detail
    assert TOKEN not in result.detail
    report = await probe_server(moved, options=ProbeOptions(ca_file=certs.ca_file,
                                                            token_provider=Tokens(TOKEN)))
    assert report.failed is not None and report.failed.step == Step.API
    assert report.failed.reason == Reason.NOT_BOUND
    assert report.endpoint is not None
    fix = likely_fix(report.failed, moved, report.endpoint)
    assert "--approve-credential-move OutgoingServer/default/graph" in fix
    assert other.requests == []  # no request, so no Authorization header, reached it

    assert (await send(certs, bound.server())).outcome is Outcome.SENT
    assert bound.requests
