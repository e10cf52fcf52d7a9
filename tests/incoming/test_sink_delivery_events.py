"""Delivery events (O14) go through the one event sink: queued with their audit rows,
they survive a sink (daemon) stopped while the webhook is down, and reach it in order
behind the ticket event already waiting, each once."""

from __future__ import annotations

import json

from state.test_delivery_events import send_outcomes

from reconciler.incoming.store import IncomingStore
from reconciler.state import SqlStore
from reconciler.state.contract import DELIVERED

from .incoming_kit import Receiver
from .test_sink import drain, fill, sink_for


async def test_delivery_events_wait_out_a_restart_and_arrive_in_order(store: SqlStore) -> None:
    store.delivery_events = True
    fill(store, ("01-new-request-plain.eml",))  # a ticket event queued first
    send_outcomes(store)  # sent, rejected, failed
    incoming = IncomingStore.of_store(store)
    receiver = Receiver().start()
    try:
        receiver.down = True
        await drain(sink_for(store, receiver), lambda: receiver.attempts >= 2)
        assert incoming.event_counts()[DELIVERED] == 0  # kept while the receiver was down
        receiver.down = False
        await drain(sink_for(store, receiver), lambda: incoming.event_counts()[DELIVERED] == 4)
        bodies = receiver.bodies()
        assert bodies[0]["kind"] == "create"
        assert [(b["event"], b["recipient"]) for b in bodies[1:]] == [
            ("sent", "a@x.example"), ("rejected", "b@x.example"), ("failed", "c@x.example")]
        assert [json.loads(e.payload) for e in incoming.events()] == bodies
    finally:
        receiver.stop()
