"""Per-server lanes: a slot per send up to the lane's size, and the lane's size chosen by
the transport when it keeps the server's limit itself."""

from __future__ import annotations

import asyncio
from typing import Any

from peers.graph_server import GraphPeer
from peers.smtp import PeerCerts

from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.dispatch.lanes import Lanes, lane_width
from reconciler.mail.graph.transport import GraphTransport
from reconciler.mail.smtp.transport import SmtpTransport

from .kit import server


async def test_a_lane_lets_its_size_in_and_queues_the_rest() -> None:
    lanes = Lanes()
    inside = asyncio.Event()
    release = asyncio.Event()

    async def send() -> None:
        async with lanes.slot(("default", "main"), 3):
            inside.set()
            await release.wait()

    tasks = [asyncio.create_task(send()) for _ in range(5)]
    await inside.wait()
    for _ in range(5):
        await asyncio.sleep(0)
    [stats] = lanes.stats().values()
    assert (stats.size, stats.busy, stats.waiting) == (3, 3, 2)
    # Another server has a lane of its own: nothing of "main" holds it up.
    async with lanes.slot(("default", "other"), 1):
        pass
    release.set()
    await asyncio.gather(*tasks)
    assert lanes.stats()[(("default", "main"), 3)].busy == 0


def test_a_self_limiting_transport_chooses_the_lane_width(certs: PeerCerts) -> None:
    def graph_server(**spec: Any) -> OutgoingServer:
        return GraphPeer(certs).server(port=443, **spec)  # settings only: never started

    graph = GraphTransport(ca_file=certs.ca_file)
    # Graph keeps the mailbox limit itself: twice as many sends may wait at its door.
    assert lane_width(graph, graph_server(maxConcurrency=4)) == 8
    assert lane_width(graph, graph_server(maxConcurrency=1)) == 2
    # SMTP does not: the lane is the server's maxConcurrency (None: the lanes' default).
    smtp = SmtpTransport()
    assert lane_width(smtp, server("relay", maxConcurrency=3)) == 3
    assert lane_width(smtp, server("relay")) == server("relay").spec.max_concurrency
