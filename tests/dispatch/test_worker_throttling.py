"""The worker and servers that throttle, against the local Graph and EWS and real stores
(SQLite and PostgreSQL): with a transport that keeps the server's limit itself (Graph),
a message waiting out a ``Retry-After`` leaves its mailbox slot to the others; a wait
the server asks for that is too long for the send's deadline (Graph's ``Retry-After``,
Exchange's ``BackOffMilliseconds``) decides when the next attempt is due (SPEC O5, O7)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from daemon.app_kit import (
    audit_of,
    commit,
    enqueue,
    mail_settings,
    note,
    resource,
    sent,
    settings,
    statuses,
    until,
)
from peers.ews_server import EwsPeer
from peers.graph_server import TOKEN, GraphPeer, graph_error
from peers.smtp import PeerCerts
from starlette.requests import Request
from starlette.responses import Response

from reconciler.dispatch.worker import Worker
from reconciler.mail.ews.transport import EwsTransport
from reconciler.mail.graph.transport import GraphTransport
from reconciler.mail.transport import Transport
from reconciler.runtime.live_config import ConfigSource
from reconciler.state import SqlStore
from reconciler.state.base import AuditStatus, OutboxState

from .kit import PASSWORD, USER, basic_auth

MAILBOX = "desk@corp.example"
THROTTLED = "throttled once"


class HoldingGraph(GraphPeer):
    """The local Graph, holding every sendMail (in flight, counted against the mailbox's
    limit) until ``release`` is set, and answering the message with subject
    :data:`THROTTLED` once with 429 and ``Retry-After``."""

    def __init__(self, certs: PeerCerts, retry_after: str) -> None:
        super().__init__(certs, mailboxes=(MAILBOX,), max_concurrent=4)
        self.release = threading.Event()
        self.held: list[str] = []  # subjects, in the order they reached the peer
        self._throttle_after = retry_after
        self._throttled_once = False

    async def _send_mail(self, request: Request) -> Response:
        subject = json.loads(await request.body())["message"]["subject"]
        with self._lock:
            first = subject == THROTTLED and not self._throttled_once
            self._throttled_once = self._throttled_once or first
            if not first:
                self.held.append(subject)
        if first:
            return graph_error(429, "ApplicationThrottled", "Application is over its "
                               "MailboxConcurrency limit.",
                               headers={"Retry-After": self._throttle_after})
        while not self.release.is_set():
            await asyncio.sleep(0.005)
        return await super()._send_mail(request)


def graph_server(peer: GraphPeer, **spec: Any) -> Any:
    body: dict[str, Any] = {
        "email": MAILBOX, "replyTo": "support@corp.example", "protocol": "graph",
        "graphEndpoint": peer.endpoint, "mailbox": MAILBOX, "primary": True,
        "timeoutSeconds": 30, "maxConcurrency": 4,
        "auth": {"type": "oauth2", "provider": "microsoft", "grant": "clientCredentials",
                 "clientId": "11111111-2222-3333-4444-555555555555", "tenant": "corp"},
    }
    body.update(spec)
    return resource("OutgoingServer", "m365", body)


@asynccontextmanager
async def running(store: SqlStore, transport: Transport) -> AsyncIterator[Transport]:
    source = ConfigSource(store)
    await source.refresh()
    worker = Worker(store, settings(), source, {transport.protocol: transport})
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield transport
    finally:
        stop.set()
        await task
        await transport.aclose()


async def test_a_message_waiting_out_retry_after_leaves_its_slot_to_the_others(
    store: SqlStore, certs: PeerCerts
) -> None:
    peer = HoldingGraph(certs, retry_after="2").start()
    try:
        commit(store, graph_server(peer), mail_settings())
        transport = graph_transport(certs)
        async with running(store, transport):
            throttled = enqueue(store, note("jane@corp.example", subject=THROTTLED))
            await until(lambda: peer.status_counts().get(429) == 1, "the 429")
            others = [enqueue(store, note("jane@corp.example", subject=f"other {i}"))
                      for i in range(4)]
            # All four slots of the mailbox busy with the others while the throttled
            # message waits: it does not keep one of the worker's lane slots idle.
            await until(lambda: len(peer.held) >= 4, "four requests in flight at Graph")
            assert sorted(peer.held[:4]) == [f"other {i}" for i in range(4)]
            msg = store.outbox.get(throttled)
            assert msg is not None and msg.state == OutboxState.LEASED
            peer.release.set()
            for outbox_id in [*others, throttled]:
                await sent(store, outbox_id)
            stats = next(iter(transport.mailbox_stats().values()))
    finally:
        peer.stop()
    assert [m.subject for m in peer.sent][-1] == THROTTLED
    assert peer.max_in_flight[MAILBOX] == 4  # never more than Graph allows
    assert stats.max_in_flight == 4 and stats.throttled == 1
    assert peer.status_counts() == {429: 1, 202: 5}
    [row] = audit_of(store, throttled)
    assert row.status == AuditStatus.SENT and "Retry-After 2s" in row.reason


@pytest.mark.parametrize(("lifetime", "state"), [(1440, OutboxState.RETRY_WAIT),
                                                  (30, OutboxState.FAILED)])
async def test_a_retry_after_past_the_deadline_sets_the_next_attempt(
    store: SqlStore, certs: PeerCerts, lifetime: int, state: OutboxState
) -> None:
    peer = GraphPeer(certs, mailboxes=(MAILBOX,)).start()
    try:
        # Backoff of at most 0.1 s: only Graph's Retry-After can put the retry an hour out.
        # The deadline is far below that hour yet long enough that a busy machine's slow
        # first request does not end the attempt first (a timeout, not the 429).
        commit(store, graph_server(peer, timeoutSeconds=60),
               mail_settings(lifetimeMinutes=lifetime))
        peer.fail_next(429, "ApplicationThrottled", "Slow down.", retry_after="3600")
        before = datetime.now(UTC)
        async with running(store, graph_transport(certs)):
            outbox_id = enqueue(store, note("jane@corp.example"))
            msg = await until(lambda: _left(store, outbox_id), "the attempt to end")
    finally:
        peer.stop()
    assert msg.state == state, msg.last_error
    assert peer.sent == []
    rows = audit_of(store, outbox_id)
    if state == OutboxState.RETRY_WAIT:
        assert msg.next_attempt_at >= before + timedelta(seconds=3600)
        assert statuses(rows) == ["RETRYING"]
        assert rows[0].details is not None and rows[0].details["retryAfterSeconds"] == 3600
        assert datetime.fromisoformat(rows[0].details["nextAttemptAt"]) == msg.next_attempt_at
    else:  # an hour's wait is past a 30-minute lifetime: given up, and the audit says why
        assert statuses(rows) == ["SEND_FAILED"]
        assert "asked to wait 3600s, past the retry lifetime" in rows[0].reason
        assert "429 ApplicationThrottled" in rows[0].reason


async def test_an_exchange_back_off_past_the_deadline_sets_the_next_attempt(
    store: SqlStore, certs: PeerCerts
) -> None:
    peer = EwsPeer(certs, user=USER, password=PASSWORD).start()
    try:
        spec = {"email": MAILBOX, "replyTo": "support@corp.example", "protocol": "ews",
                "host": "localhost", "port": peer.port, "ewsUrl": peer.url, "primary": True,
                "timeoutSeconds": 5, "auth": basic_auth()}
        commit(store, resource("OutgoingServer", "exchange", spec), mail_settings())
        peer.fail_next("CreateItem", "busy", back_off_ms=600_000)
        before = datetime.now(UTC)
        async with running(store, EwsTransport(ca_file=certs.ca_file)):
            outbox_id = enqueue(store, note("jane@corp.example"))
            msg = await until(lambda: _left(store, outbox_id), "the attempt to end")
    finally:
        peer.stop()
    assert msg.state == OutboxState.RETRY_WAIT, msg.last_error
    assert msg.next_attempt_at >= before + timedelta(seconds=600)
    [row] = audit_of(store, outbox_id)
    assert row.status == AuditStatus.RETRYING and "ErrorServerBusy" in row.reason
    assert row.details is not None and row.details["retryAfterSeconds"] == 600
    assert peer.sent == []


def graph_transport(certs: PeerCerts) -> GraphTransport:
    return GraphTransport(ca_file=certs.ca_file, token_provider=lambda _server: TOKEN)


def _left(store: SqlStore, outbox_id: int) -> Any:
    msg = store.outbox.get(outbox_id)
    return msg if msg is not None and msg.state in (OutboxState.RETRY_WAIT,
                                                    OutboxState.FAILED) else None
