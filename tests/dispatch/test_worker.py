"""The send loop against real stores (SQLite and PostgreSQL) and real SMTP peers
(aiosmtpd with STARTTLS/TLS/AUTH, Postfix smtp-sink for 4xx/5xx): routing, filters,
O8 "not sent" reasons, attachments, retries, failover, hot reload, leases and stop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from daemon.app_kit import (
    audit_of,
    commit,
    cond,
    enqueue,
    mail_settings,
    note,
    recipient_filter,
    rule,
    running_worker,
    sent,
    settings,
    smtp_server,
    smtp_transport,
    statuses,
    until,
)
from peers.smtp import PeerCerts, SmtpPeer, free_port
from peers.smtp_sink import SmtpSink

from reconciler.dispatch.group_commit import GroupCommit
from reconciler.mail.failover import HostSelector
from reconciler.state import SqlStore
from reconciler.state.base import (
    AuditStatus,
    Completion,
    OutboxState,
    RoutingSnapshot,
    StoreUnavailable,
)

from .kit import PASSWORD, PASSWORD_ENV, USER

PeerFactory = Callable[..., SmtpPeer]


def received_ids(peer: SmtpPeer) -> list[str]:
    return [str(m.message["Message-ID"]) for m in peer.messages]


# -- the normal path ----------------------------------------------------------------------


async def test_primary_server_sends_and_every_recipient_is_audited_sent(
    store: SqlStore, peer_factory: PeerFactory
) -> None:
    peer = peer_factory("plain")
    revision = commit(store, smtp_server("main", peer.port, primary=True))
    async with running_worker(store):
        first = enqueue(store, note("jane@corp.example", cc=["ops@corp.example"],
                                    bcc=["audit@corp.example"]))
        second = enqueue(store, note("bob@corp.example", idempotencyKey="ticket-7"))
        await sent(store, first)
        await sent(store, second)
    rows = audit_of(store, first)
    assert statuses(rows) == ["SENT"] * 3
    assert {r.recipient for r in rows} == {"jane@corp.example", "ops@corp.example",
                                           "audit@corp.example"}
    row = rows[0]
    assert (row.server, row.host, row.attempt, row.outbox_id, row.namespace, row.module) == (
        "main", f"127.0.0.1:{peer.port}", 1, first, "default", "request")
    assert row.details is not None and row.details["configRevision"] == revision
    assert "queued as peer-1" in row.details["serverReply"]
    # The audit's Message-ID is the one the receiver got, with or without an idempotency key.
    assert len(peer.messages) == 2
    assert {r.message_id for r in rows} | {audit_of(store, second)[0].message_id} == set(
        received_ids(peer))
    bcc_copy = next(m for m in peer.messages if "audit@corp.example" in m.rcpt_tos)
    assert b"audit@corp.example" not in bcc_copy.data
    # The route and why are kept with the result, written in the same group commit (O13).
    kept = store.outbox.get(first)
    assert kept is not None and kept.routing is not None and kept.routing.server == "main"
    assert kept.decision is not None and kept.decision["via"] == "primary"


async def test_rule_picks_its_server_and_anything_else_goes_to_the_primary(
    store: SqlStore, peer_factory: PeerFactory
) -> None:
    main, hr = peer_factory("plain"), peer_factory("plain")
    commit(store, smtp_server("main", main.port, primary=True), smtp_server("hr", hr.port),
           rule("hr-requests", 10, "hr", cond("department", "HR")))
    async with running_worker(store):
        to_hr = enqueue(store, note("jane@corp.example", context={"department": "hr"}))
        to_main = enqueue(store, note("jane@corp.example", context={"department": "IT"}))
        other_module = enqueue(store, note("jane@corp.example", module="change",
                                           context={"department": "HR"}))
        for outbox_id in (to_hr, to_main, other_module):
            await sent(store, outbox_id)
    assert [r.server for r in audit_of(store, to_hr)] == ["hr"]
    assert [r.server for r in audit_of(store, to_main)] == ["main"]
    assert [r.server for r in audit_of(store, other_module)] == ["main"]
    assert audit_of(store, to_hr)[0].details["configRevision"] == 1  # type: ignore[index]
    assert len(hr.messages) == 1 and len(main.messages) == 2


async def test_filtered_recipients_are_audited_ignored_and_the_rest_is_sent(
    store: SqlStore, peer_factory: PeerFactory
) -> None:
    peer = peer_factory("plain")
    commit(store, smtp_server("main", peer.port, primary=True, recipientFilter="no-lists"),
           recipient_filter("no-lists", "ignore", emails=["all-staff@corp.example"],
                            domains=["lists.corp.example"]))
    async with running_worker(store):
        outbox_id = enqueue(store, note("jane@corp.example", "All-Staff@corp.example",
                                        cc=["dev@lists.corp.example"]))
        await sent(store, outbox_id)
    rows = {r.recipient: r for r in audit_of(store, outbox_id)}
    assert rows["jane@corp.example"].status == AuditStatus.SENT
    staff = rows["All-Staff@corp.example"]
    assert staff.status == AuditStatus.SEND_IGNORED
    assert staff.details is not None
    assert (staff.details["filter"], staff.details["entry"]) == ("no-lists",
                                                                 "all-staff@corp.example")
    lists = rows["dev@lists.corp.example"]
    assert lists.status == AuditStatus.SEND_IGNORED and "lists.corp.example" in lists.reason
    assert lists.details is not None and lists.details["field"] == "cc"
    [got] = peer.messages
    assert got.rcpt_tos == ["jane@corp.example"]
    assert "lists.corp.example" not in str(got.message["Cc"] or "")


async def test_partial_refusal_is_audited_per_recipient(
    store: SqlStore, peer_factory: PeerFactory
) -> None:
    peer = peer_factory("plain")
    peer.handler.recipient_replies["gone@corp.example"] = "550 5.1.1 no such user"
    peer.handler.recipient_replies["full@corp.example"] = "452 4.2.2 mailbox full"
    commit(store, smtp_server("main", peer.port, primary=True))
    async with running_worker(store):
        outbox_id = enqueue(store, note("jane@corp.example", "gone@corp.example",
                                        "full@corp.example"))
        await sent(store, outbox_id)
    rows = {r.recipient: r for r in audit_of(store, outbox_id)}
    assert rows["jane@corp.example"].status == AuditStatus.SENT
    gone = rows["gone@corp.example"]
    assert gone.status == AuditStatus.SEND_FAILED and "550 5.1.1 no such user" in gone.reason
    assert gone.details is not None and gone.details["code"] == 550
    full = rows["full@corp.example"]
    assert full.status == AuditStatus.SEND_FAILED and "temporary refusal" in full.reason


# -- O8: not sent, with the reason ---------------------------------------------------------------


async def test_each_not_sent_case_is_send_failed_with_its_reason(
    store: SqlStore, peer_factory: PeerFactory
) -> None:
    peer = peer_factory("plain")
    port = peer.port
    revision = commit(
        store,
        # filtered: an allow list nobody in the notification is on
        smtp_server("allow-only", port, namespace="filtered", primary=True,
                    recipientFilter="partners"),
        recipient_filter("partners", "allow", domains=["partner.example"], namespace="filtered"),
        # no Reply-To (validate and the shipped policy forbid it; the store can drift)
        smtp_server("no-reply", port, namespace="noreply", primary=True, replyTo=None),
        # no host
        smtp_server("hostless", None, namespace="incomplete", primary=True, host=None),
        # only a disabled server
        smtp_server("off", port, namespace="disabled", primary=True, enabled=False),
    )
    async with running_worker(store):
        filtered = enqueue(store, note("jane@corp.example", namespace="filtered"))
        empty = enqueue(store, note(namespace="filtered", to=[]))
        no_reply = enqueue(store, note("jane@corp.example", namespace="noreply"))
        incomplete = enqueue(store, note("jane@corp.example", namespace="incomplete"))
        no_server = enqueue(store, note("jane@corp.example", namespace="disabled"))
        # routed at intake to the server that is disabled now
        routed_disabled = enqueue(store, note("jane@corp.example", namespace="disabled"),
                                  routing=RoutingSnapshot(revision, "off"))
        unknown_ns = enqueue(store, note("jane@corp.example", namespace="nowhere"))
        await sent(store, filtered, OutboxState.IGNORED)
        await sent(store, empty, OutboxState.IGNORED)
        for outbox_id in (no_reply, incomplete, no_server, routed_disabled, unknown_ns):
            await sent(store, outbox_id, OutboxState.FAILED)

    def failed(outbox_id: int) -> str:
        rows = [r for r in audit_of(store, outbox_id) if r.status == AuditStatus.SEND_FAILED]
        assert len(rows) == 1, rows
        return rows[0].reason

    assert statuses(audit_of(store, filtered)) == ["SEND_IGNORED", "SEND_FAILED"]
    assert failed(filtered) == "recipients list is empty: every recipient was filtered out"
    assert failed(empty) == "recipients list is empty: the notification has no recipients"
    assert failed(no_reply).startswith("the chosen outgoing server has no Reply-To address")
    assert audit_of(store, no_reply)[0].recipient == "jane@corp.example"
    assert failed(incomplete).startswith(
        "the chosen outgoing server's configuration is incomplete: server hostless has no host")
    assert failed(no_server).startswith("no enabled outgoing server")
    assert failed(routed_disabled).startswith("the chosen outgoing server is disabled")
    assert "namespace nowhere has no configuration" in failed(unknown_ns)
    assert peer.messages == []


async def test_oversized_attachment_is_dropped_and_named_in_the_sent_entry(
    store: SqlStore, peer_factory: PeerFactory
) -> None:
    peer = peer_factory("plain")
    commit(store, smtp_server("main", peer.port, primary=True, attachmentLimitMB=1))
    big = b"x" * (1024 * 1024 + 1)
    async with running_worker(store):
        outbox_id = enqueue(store, note("jane@corp.example", attachments=[
            {"name": "huge-log.txt", "contentType": "text/plain", "data": big},
            {"name": "small.txt", "contentType": "text/plain", "data": b"fine"},
        ]))
        await sent(store, outbox_id)
    [row] = audit_of(store, outbox_id)
    assert row.status == AuditStatus.SENT and "huge-log.txt" in row.reason
    assert row.details is not None
    assert [(d["name"], d["size"]) for d in row.details["droppedAttachments"]] == [
        ("huge-log.txt", len(big))]
    [got] = peer.messages
    names = [part.get_filename() for part in got.message.iter_attachments()]
    assert names == ["small.txt"]


# -- O7: transient and permanent failures -------------------------------------------------


async def test_soft_reject_is_retried_then_sent_once_the_server_recovers(
    store: SqlStore, smtp_sink: SmtpSink
) -> None:
    smtp_sink.restart(["-r", "RCPT"])  # 4xx to every RCPT TO
    revision = commit(store, smtp_server("sink", smtp_sink.port, primary=True), mail_settings())
    async with running_worker(store):
        outbox_id = enqueue(store, note("jane@corp.example"))
        await until(lambda: len(audit_of(store, outbox_id)) >= 2, "two RETRYING attempts")
        await asyncio.to_thread(smtp_sink.restart, [])
        msg = await sent(store, outbox_id)
    rows = audit_of(store, outbox_id)
    assert set(statuses(rows[:-1])) == {"RETRYING"} and rows[-1].status == AuditStatus.SENT
    assert [r.attempt for r in rows] == list(range(1, len(rows) + 1))
    retrying = rows[0]
    assert retrying.reason.startswith("every recipient was refused") and "4" in retrying.reason
    assert retrying.details is not None and "nextAttemptAt" in retrying.details
    assert retrying.host == f"127.0.0.1:{smtp_sink.port}"
    assert len({r.message_id for r in rows}) == 1  # every attempt carries the same Message-ID
    assert msg.routing == RoutingSnapshot(revision, "sink")  # recorded before the first retry
    assert msg.attempts == len(rows)


async def test_hard_reject_fails_at_once(store: SqlStore, smtp_sink: SmtpSink) -> None:
    smtp_sink.restart(["-f", "DATA"])  # 5xx to DATA
    commit(store, smtp_server("sink", smtp_sink.port, primary=True), mail_settings())
    async with running_worker(store):
        outbox_id = enqueue(store, note("jane@corp.example", "bob@corp.example"))
        msg = await sent(store, outbox_id, OutboxState.FAILED)
    rows = audit_of(store, outbox_id)
    assert statuses(rows) == ["SEND_FAILED", "SEND_FAILED"]
    assert all(r.attempt == 1 and "5" in r.reason and "DATA" in r.reason for r in rows)
    assert msg.attempts == 1 and msg.last_error is not None


async def test_transient_failures_give_up_after_max_attempts(
    store: SqlStore, smtp_sink: SmtpSink
) -> None:
    smtp_sink.restart(["-r", "MAIL"])
    commit(store, smtp_server("sink", smtp_sink.port, primary=True),
           mail_settings(maxAttempts=2))
    async with running_worker(store):
        outbox_id = enqueue(store, note("jane@corp.example"))
        msg = await sent(store, outbox_id, OutboxState.FAILED)
    rows = audit_of(store, outbox_id)
    assert statuses(rows) == ["RETRYING", "SEND_FAILED"]
    assert rows[1].reason.startswith("gave up after 2 attempts: ")
    assert msg.last_error is not None and msg.last_error.startswith("gave up after 2 attempts")


async def test_message_that_never_finishes_is_failed_instead_of_sent_for_ever(
    store: SqlStore, peer_factory: PeerFactory
) -> None:
    peer = peer_factory("plain")
    commit(store, smtp_server("main", peer.port, primary=True), mail_settings(maxAttempts=1))
    outbox_id = enqueue(store, note("jane@corp.example"))
    # A daemon claimed it and died: the lease runs out, the claim still counted.
    [claimed] = store.outbox.claim("dead-daemon", 1, 0.01)
    assert claimed.id == outbox_id
    async with running_worker(store):
        msg = await sent(store, outbox_id, OutboxState.FAILED)
    assert msg.attempts == 2 and "never finished" in (msg.last_error or "")
    assert peer.messages == []


# -- O5: security and authentication end to end ---------------------------------------


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_tls_and_auth_with_the_ca_from_settings(
    mode: str, store: SqlStore, peer_factory: PeerFactory, certs: PeerCerts
) -> None:
    peer = peer_factory(mode, user=USER, password=PASSWORD)
    auth = {"type": "basic", "username": USER, "password": {"secretRef": f"env:{PASSWORD_ENV}"}}
    commit(store, smtp_server("secure", peer.port, primary=True,
                              security="starttls" if mode == "starttls" else "tls", auth=auth))
    async with running_worker(store, transport=smtp_transport(certs.ca_file)):
        outbox_id = enqueue(store, note("jane@corp.example"))
        await sent(store, outbox_id)
    [got] = peer.messages
    assert got.tls and got.login == USER
    assert PASSWORD not in repr(audit_of(store, outbox_id))


# -- O6: failover ------------------------------------------------------------------------


async def test_unreachable_main_host_fails_over_and_comes_back_when_healthy(
    store: SqlStore, peer_factory: PeerFactory
) -> None:
    alternate = peer_factory("plain")
    main_port = free_port()  # nothing listens: connection refused
    commit(store, smtp_server("main", main_port, primary=True, alternateHost="127.0.0.1",
                              alternatePort=alternate.port))
    selector = HostSelector()
    async with running_worker(store, transport=smtp_transport(selector=selector)):
        first = enqueue(store, note("jane@corp.example"))
        await sent(store, first)
        [row] = audit_of(store, first)
        assert row.host == f"127.0.0.1:{alternate.port}"
        assert row.details is not None and row.details["usedAlternate"] is True
        assert selector.is_down("127.0.0.1", main_port)

        main = peer_factory("plain", port=main_port)  # the main host is back
        second = enqueue(store, note("jane@corp.example"))
        await sent(store, second)
        # Still on the alternate until the health monitor says the main host is fine.
        assert audit_of(store, second)[0].host == f"127.0.0.1:{alternate.port}"
        selector.mark_healthy("127.0.0.1", main_port)
        third = enqueue(store, note("jane@corp.example"))
        await sent(store, third)
    [row] = audit_of(store, third)
    assert row.host == f"127.0.0.1:{main_port}" and "usedAlternate" not in (row.details or {})
    assert len(main.messages) == 1 and len(alternate.messages) == 2


# -- O12: hot reload ---------------------------------------------------------------------


async def test_new_revision_routes_new_messages_and_a_routed_message_keeps_its_own(
    store: SqlStore, smtp_sink: SmtpSink, peer_factory: PeerFactory
) -> None:
    smtp_sink.restart(["-r", "RCPT"])
    first_revision = commit(store, smtp_server("main", smtp_sink.port, primary=True),
                            mail_settings(initialBackoffSeconds=0.2, maxBackoffSeconds=0.2))
    peer = peer_factory("plain")
    async with running_worker(store) as running:
        old = enqueue(store, note("jane@corp.example", subject="routed before"))
        await until(lambda: audit_of(store, old), "the first attempt")
        # The same server now points somewhere else.
        second_revision = commit(store, smtp_server("main", peer.port, primary=True),
                                 mail_settings(initialBackoffSeconds=0.2,
                                               maxBackoffSeconds=0.2))
        assert await running.reload() == second_revision
        new = enqueue(store, note("jane@corp.example", subject="after the apply"))
        await sent(store, new)
        await asyncio.to_thread(smtp_sink.restart, [])
        await sent(store, old)
    assert audit_of(store, new)[0].host == f"127.0.0.1:{peer.port}"
    assert audit_of(store, new)[0].details["configRevision"] == second_revision  # type: ignore[index]
    last = audit_of(store, old)[-1]
    assert last.status == AuditStatus.SENT and last.host == f"127.0.0.1:{smtp_sink.port}"
    assert last.details is not None and last.details["configRevision"] == first_revision
    assert [str(m.message["Subject"]) for m in peer.messages] == ["after the apply"]


async def test_a_server_disabled_after_routing_is_not_used_for_the_retry(
    store: SqlStore, smtp_sink: SmtpSink
) -> None:
    smtp_sink.restart(["-r", "RCPT"])
    slow = mail_settings(initialBackoffSeconds=0.2, maxBackoffSeconds=0.2)
    commit(store, smtp_server("main", smtp_sink.port, primary=True), slow)
    async with running_worker(store) as running:
        outbox_id = enqueue(store, note("jane@corp.example"))
        await until(lambda: audit_of(store, outbox_id), "the first attempt")
        # The admin's stop button: queued retries must honour it too.
        revision = commit(store, smtp_server("main", smtp_sink.port, primary=True,
                                             enabled=False), slow)
        await running.reload()
        await asyncio.to_thread(smtp_sink.restart, [])
        await sent(store, outbox_id, OutboxState.FAILED)
    rows = audit_of(store, outbox_id)
    # Full jitter may fit another attempt in before the disable lands: all of them retry.
    assert set(statuses(rows[:-1])) == {"RETRYING"} and rows[-1].status == "SEND_FAILED"
    assert rows[-1].reason == (f"the chosen outgoing server is disabled: server main was "
                              f"disabled at revision {revision}, after this message was "
                              "routed to it")


# -- concurrency, leases, stop ----------------------------------------------------------------


async def test_a_batch_is_sent_concurrently_within_the_server_lane(
    store: SqlStore, peer_factory: PeerFactory
) -> None:
    peer = peer_factory("plain")
    peer.handler.hang_on_data = True
    # A long timeout: on a loaded machine the three sessions may open seconds apart, and
    # the kit's 5 s would end the first hung DATA (a retry later) before the third opens.
    commit(store, smtp_server("main", peer.port, primary=True, maxConcurrency=3,
                              timeoutSeconds=120))
    async with running_worker(store):
        ids = [enqueue(store, note(f"user{i}@corp.example")) for i in range(9)]
        # Three sends are in DATA at once: one per lane slot, each on its own connection.
        await until(lambda: peer.connections == 3, "three concurrent sessions")
        peer.handler.release.set()
        for outbox_id in ids:
            await sent(store, outbox_id)
    assert peer.connections == 3  # never more than the lane allows; then reused
    assert len(peer.messages) == 9


async def test_leases_are_renewed_while_a_send_takes_long(
    store: SqlStore, peer_factory: PeerFactory
) -> None:
    peer = peer_factory("plain")
    peer.handler.hang_on_data = True
    commit(store, smtp_server("main", peer.port, primary=True, timeoutSeconds=30))
    lease = 0.8
    async with running_worker(store, settings(lease_seconds=lease)) as running:
        outbox_id = enqueue(store, note("jane@corp.example"))
        await until(lambda: peer.connections == 1, "the send to start")
        # Over two lease lengths, nobody else may take the message.
        for _ in range(4):
            stolen = await asyncio.to_thread(store.outbox.claim, "other-daemon", 10, 60)
            assert stolen == []
            await asyncio.sleep(lease / 2)
        peer.handler.release.set()
        await sent(store, outbox_id)
        assert running.worker.committer.stats.lost == 0
    assert len(peer.messages) == 1


async def test_stop_finishes_sends_in_flight_and_releases_the_rest(
    store: SqlStore, peer_factory: PeerFactory
) -> None:
    peer = peer_factory("plain")
    peer.handler.hang_on_data = True
    commit(store, smtp_server("main", peer.port, primary=True, maxConcurrency=1))
    async with running_worker(store, settings(shutdown_grace_seconds=30)) as running:
        ids = [enqueue(store, note(f"user{i}@corp.example")) for i in range(3)]
        await until(lambda: peer.connections == 1, "one send in flight")
        running.stop.set()
        await until(lambda: running.worker.stopping, "the stop to begin")
        peer.handler.release.set()
        await running.task
    states = {i: store.outbox.get(i) for i in ids}
    done = [i for i, m in states.items() if m is not None and m.state == OutboxState.SENT]
    assert len(done) == 1 and len(peer.messages) == 1
    for outbox_id in set(ids) - set(done):
        msg = states[outbox_id]
        assert msg is not None
        assert (msg.state, msg.lease_owner, msg.attempts) == (OutboxState.QUEUED, None, 0)
        assert audit_of(store, outbox_id) == []


async def test_stop_after_the_grace_period_gives_back_the_unfinished_send(
    store: SqlStore, peer_factory: PeerFactory
) -> None:
    peer = peer_factory("plain")
    peer.handler.hang_on_data = True
    commit(store, smtp_server("main", peer.port, primary=True, timeoutSeconds=30))
    async with running_worker(store, settings(shutdown_grace_seconds=0.1)) as running:
        outbox_id = enqueue(store, note("jane@corp.example"))
        await until(lambda: peer.connections == 1, "the send to start")
        await running.halt()
    msg = store.outbox.get(outbox_id)
    assert msg is not None
    assert (msg.state, msg.lease_owner, msg.attempts) == (OutboxState.QUEUED, None, 0)
    # Whoever claims next sends it.
    [again] = store.outbox.claim("next-daemon", 10, 60)
    assert again.id == outbox_id


async def test_nothing_is_sent_before_any_config_is_applied(
    store: SqlStore, peer_factory: PeerFactory
) -> None:
    peer = peer_factory("plain")
    async with running_worker(store) as running:
        outbox_id = enqueue(store, note("jane@corp.example"))
        await asyncio.sleep(0.2)
        msg = store.outbox.get(outbox_id)
        assert msg is not None and msg.state == OutboxState.QUEUED  # waits, does not fail
        commit(store, smtp_server("main", peer.port, primary=True))
        await running.reload()
        await sent(store, outbox_id)


async def test_metrics_count_sends_and_delivery_latency(
    store: SqlStore, peer_factory: PeerFactory
) -> None:
    peer = peer_factory("plain")
    commit(store, smtp_server("main", peer.port, primary=True))
    async with running_worker(store) as running:
        ids = [enqueue(store, note("jane@corp.example")) for _ in range(3)]
        for outbox_id in ids:
            await sent(store, outbox_id)
        registry = running.metrics.registry
        # Counted once the worker has the commit's answer, a moment after the rows show.
        await until(lambda: registry.get_sample_value(
            "reconcile_sends_total",
            {"namespace": "default", "server": "main", "outcome": "sent"}) == 3,
            "the sends counter")
        assert registry.get_sample_value("reconcile_delivery_latency_seconds_count") == 3
        assert registry.get_sample_value("reconcile_send_duration_seconds_count",
                                         {"server": "main"}) == 3


# -- group commit --------------------------------------------------------------------------


class CountingOutbox:
    """The store's outbox, counting complete_many calls and failing the first ``fail``."""

    def __init__(self, store: SqlStore, fail: int = 0) -> None:
        self._outbox = store.outbox
        self.fail = fail
        self.groups: list[int] = []

    def complete_many(self, owner: str, completions: Any, **kw: Any) -> Any:
        if self.fail:
            self.fail -= 1
            raise StoreUnavailable("the store is down (test)")
        self.groups.append(len(completions))
        return self._outbox.complete_many(owner, completions, **kw)


async def test_results_arriving_together_are_written_in_one_transaction(store: SqlStore) -> None:
    ids = [enqueue(store, note(f"user{i}@corp.example")) for i in range(20)]
    claimed = store.outbox.claim("w1", 20, 60)
    outbox = CountingOutbox(store, fail=1)
    committer = GroupCommit(outbox, "w1")  # type: ignore[arg-type]
    task = asyncio.create_task(committer.run())
    results = await asyncio.gather(*(committer.submit(Completion(m.id, OutboxState.SENT))
                                     for m in claimed))
    committer.close()
    await task
    assert results == [True] * 20
    assert outbox.groups == [20]  # one transaction, after the failed one was retried
    assert committer.stats.failures == 1
    assert all(store.outbox.get(i).state == OutboxState.SENT for i in ids)  # type: ignore[union-attr]



async def test_a_result_lingers_for_company_before_its_group_is_written(store: SqlStore) -> None:
    [first, second] = [enqueue(store, note(f"user{i}@corp.example")) for i in range(2)]
    store.outbox.claim("w1", 2, 60)
    outbox = CountingOutbox(store)
    committer = GroupCommit(outbox, "w1", linger=0.5)  # type: ignore[arg-type]
    task = asyncio.create_task(committer.run())
    early = asyncio.create_task(committer.submit(Completion(first, OutboxState.SENT)))
    await asyncio.sleep(0.05)  # well after the first result, well within its linger
    late = await committer.submit(Completion(second, OutboxState.SENT))
    committer.close()
    await task
    assert (await early, late) == (True, True)
    assert outbox.groups == [2]


async def test_a_stop_writes_lingering_results_at_once(store: SqlStore) -> None:
    [only] = [enqueue(store, note("user@corp.example"))]
    store.outbox.claim("w1", 1, 60)
    outbox = CountingOutbox(store)
    committer = GroupCommit(outbox, "w1", linger=60.0)  # type: ignore[arg-type]
    task = asyncio.create_task(committer.run())
    waiting = asyncio.create_task(committer.submit(Completion(only, OutboxState.SENT)))
    await asyncio.sleep(0.05)
    committer.close()
    await asyncio.wait_for(task, 10)  # not the 60 s linger
    assert await waiting is True
    assert store.outbox.get(only).state == OutboxState.SENT  # type: ignore[union-attr]
