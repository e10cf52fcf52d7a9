"""HealthMonitor (O6, O9, X4) against real peers and real stores (SQLite and PostgreSQL):
status records, transitions notified once, failover and the return to the main host,
status never drift, one leader on a shared PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from peers.smtp import HOST, PeerCerts, SmtpPeer, free_port, server_spec
from peers.smtp_sink import SmtpSink

from reconciler.cli.main import cli
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.dispatch.compose import compose
from reconciler.dispatch.filters import filter_notification
from reconciler.health import record as rec
from reconciler.health.monitor import LEADER_ROLE, HealthMonitor
from reconciler.mail.envelope import Notification
from reconciler.mail.failover import HostSelector
from reconciler.mail.outcome import Outcome
from reconciler.mail.smtp.transport import SmtpTransport
from reconciler.state import SqlStore, open_store
from reconciler.state.leases import lock_key

from .kit import (
    PASSWORD,
    USER,
    WRONG,
    WRONG_ENV,
    WebhookReceiver,
    assert_no_secret,
    basic_auth,
    key_of,
    monitor_for,
    put_servers,
)

PeerFactory = Callable[..., SmtpPeer]


def up(monitor: HealthMonitor, server: OutgoingServer) -> float | None:
    return monitor._metrics.registry.get_sample_value(
        "reconcile_server_reachable",
        {"namespace": server.metadata.namespace, "server": server.metadata.name})


def health(store: SqlStore, server: OutgoingServer) -> rec.HealthRecord:
    found = rec.read(store.status_get(key_of(server)))
    assert found is not None
    return found


async def send_via(selector: HostSelector, server: OutgoingServer) -> Any:
    n = Notification.model_validate({"module": "request", "to": ["jane@corp.example"],
                                     "subject": "hi", "text_body": "hello"})
    transport = SmtpTransport(selector=selector, local_hostname="client.test",
                              connect_timeout=30.0)
    try:
        return await transport.send(compose(n, server, filter_notification(n, None)), server)
    finally:
        await transport.aclose()


# -- status ------------------------------------------------------------------------


async def test_reachable_and_unreachable_servers_are_recorded(
    store: SqlStore, store_url: str, peer_factory: PeerFactory
) -> None:
    peer = peer_factory("plain")
    good = peer.server("good")
    closed_port = free_port()
    bad = server_spec(closed_port, "plain", "bad", primary=False)
    off = server_spec(free_port(), "plain", "off", primary=False, enabled=False)
    put_servers(store, good, bad, off)
    store.status_put(key_of(good), {"sent": 41})  # someone else's status: kept
    monitor = monitor_for(store, store_url)

    cycle = await monitor.probe_once()

    assert cycle.leader and set(cycle.checks) == {key_of(good), key_of(bad)}
    ok = health(store, good)
    assert ok.state == rec.REACHABLE and ok.last_error is None and ok.active_host == rec.MAIN
    assert ok.checked_by == "daemon-1" and ok.last_change == ok.last_checked
    assert ok.hosts[rec.MAIN].address == f"{HOST}:{peer.port}"
    assert store.status_get(key_of(good))["sent"] == 41
    down = health(store, bad)
    assert down.state == rec.UNREACHABLE
    assert down.last_error == f"tcp: connection refused by {HOST}:{closed_port}"
    assert down.failed_step == "tcp" and down.hint and "Check the port" in down.hint
    assert store.status_get(key_of(off)) == {}  # disabled: never probed
    assert (up(monitor, good), up(monitor, bad), up(monitor, off)) == (1.0, 0.0, None)


async def test_last_change_stays_while_the_state_stays(
    store: SqlStore, store_url: str, peer_factory: PeerFactory
) -> None:
    server = peer_factory("plain").server()
    put_servers(store, server)
    monitor = monitor_for(store, store_url)
    await monitor.probe_once()
    first = health(store, server)
    await monitor.probe_once()
    second = health(store, server)
    assert second.last_change == first.last_change
    assert second.last_checked >= first.last_checked


async def test_transitions_notify_once_and_recovery_notifies(
    store: SqlStore, store_url: str, webhook: WebhookReceiver, smtp_sink: SmtpSink
) -> None:
    server = server_spec(smtp_sink.port, "plain", "relay")
    put_servers(store, server)
    monitor = monitor_for(store, store_url, webhook=webhook.url)

    await monitor.probe_once()
    assert health(store, server).state == rec.REACHABLE and webhook.received == []

    smtp_sink.stop()
    for _ in range(3):  # every failed probe after the first is no news
        cycle = await monitor.probe_once()
    assert cycle.transitions == ()
    assert webhook.events() == [("server.unreachable", "relay")]
    [note] = webhook.received
    assert note["namespace"] == "default" and note["kind"] == "OutgoingServer"
    assert (note["oldStatus"], note["newStatus"]) == ("Reachable", "Unreachable")
    assert note["error"].startswith("tcp: connection refused by")
    assert note["failedStep"] == "tcp" and note["time"]
    down_since = health(store, server).last_change

    smtp_sink.start()
    await monitor.probe_once()
    await monitor.probe_once()
    assert webhook.events() == [("server.unreachable", "relay"), ("server.recovered", "relay")]
    recovered = webhook.received[1]
    assert (recovered["oldStatus"], recovered["newStatus"]) == ("Unreachable", "Reachable")
    assert recovered["error"] is None
    back = health(store, server)
    assert back.state == rec.REACHABLE and back.last_change > down_since


async def test_a_new_monitor_does_not_re_announce_a_known_outage(
    store: SqlStore, store_url: str, webhook: WebhookReceiver
) -> None:
    server = server_spec(free_port(), "plain", "gone")
    put_servers(store, server)
    await monitor_for(store, store_url, webhook=webhook.url).probe_once()
    assert webhook.events() == [("server.unreachable", "gone")]  # first sight: Unknown → down
    # a restarted daemon (or a new leader) reads the stored state first
    await monitor_for(store, store_url, webhook=webhook.url, worker="daemon-2").probe_once()
    assert webhook.events() == [("server.unreachable", "gone")]


async def test_failover_and_traffic_returning_to_the_main_host(
    store: SqlStore, store_url: str, webhook: WebhookReceiver, smtp_sink: SmtpSink,
    peer_factory: PeerFactory,
) -> None:
    alternate = peer_factory("plain")
    server = server_spec(smtp_sink.port, "plain", "relay", alternateHost=HOST,
                         alternatePort=alternate.port)
    put_servers(store, server)
    selector = HostSelector()  # shared with the transport, as in the daemon
    monitor = monitor_for(store, store_url, webhook=webhook.url, selector=selector)

    await monitor.probe_once()
    assert health(store, server).active_host == rec.MAIN

    smtp_sink.stop()
    await monitor.probe_once()
    assert selector.is_down(HOST, smtp_sink.port)
    moved = health(store, server)
    assert (moved.state, moved.active_host) == (rec.REACHABLE, rec.ALTERNATE)
    assert moved.hosts[rec.MAIN].cannot_reach and moved.hosts[rec.ALTERNATE].reachable
    assert webhook.events() == [("server.failover", "relay")]
    assert webhook.received[0]["error"].startswith("tcp: connection refused")
    sent = await send_via(selector, server)
    assert sent.outcome == Outcome.SENT and sent.used_alternate
    assert len(alternate.messages) == 1

    smtp_sink.start()
    await monitor.probe_once()
    assert not selector.is_down(HOST, smtp_sink.port)
    assert health(store, server).active_host == rec.MAIN
    assert webhook.events()[-1] == ("server.failback", "relay")
    sent = await send_via(selector, server)
    assert sent.outcome == Outcome.SENT and not sent.used_alternate  # traffic is back on main
    assert sent.host == f"{HOST}:{smtp_sink.port}" and len(alternate.messages) == 1


async def test_both_hosts_down_is_unreachable(
    store: SqlStore, store_url: str, webhook: WebhookReceiver
) -> None:
    server = server_spec(free_port(), "plain", "relay", alternateHost=HOST,
                         alternatePort=free_port())
    put_servers(store, server)
    await monitor_for(store, store_url, webhook=webhook.url).probe_once()
    down = health(store, server)
    assert (down.state, down.active_host) == (rec.UNREACHABLE, rec.ALTERNATE)
    assert webhook.events() == [("server.unreachable", "relay")]  # one note, not two


async def test_an_auth_failure_does_not_fail_over_and_leaks_nothing(
    store: SqlStore, store_url: str, webhook: WebhookReceiver, peer_factory: PeerFactory,
    certs: PeerCerts, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(WRONG_ENV, WRONG)
    main = peer_factory("starttls", user=USER, password=PASSWORD)
    alternate = peer_factory("plain")
    server = main.server("relay", auth=basic_auth(WRONG_ENV), alternateHost=HOST,
                         alternatePort=alternate.port)
    put_servers(store, server)
    selector = HostSelector()
    monitor = monitor_for(store, store_url, webhook=webhook.url, selector=selector,
                          ca_file=certs.ca_file)

    await monitor.probe_once()
    record = health(store, server)
    assert not selector.is_down(HOST, main.port)  # reachable, misconfigured: stay on main
    assert (record.state, record.active_host) == (rec.UNREACHABLE, rec.MAIN)
    assert webhook.events() == [("server.unreachable", "relay")]
    texts = [repr(store.status_get(key_of(server))), repr(webhook.received),
             *(r.getMessage() for r in caplog.records)]
    assert_no_secret(texts, WRONG)
    assert "hook-secret-123" not in "\n".join(r.getMessage() for r in caplog.records)


async def test_removed_and_disabled_servers_leave_the_metrics(
    store: SqlStore, store_url: str, peer_factory: PeerFactory
) -> None:
    server = peer_factory("plain").server("relay")
    put_servers(store, server)
    monitor = monitor_for(store, store_url)
    await monitor.probe_once()
    assert up(monitor, server) == 1.0
    put_servers(store, server.model_copy(update={
        "spec": server.spec.model_copy(update={"enabled": False})}))
    monitor._config.refresh(store)
    await monitor.probe_once()
    assert up(monitor, server) is None


def test_status_is_never_drift(store: SqlStore, store_url: str, tmp_path: Path,
                               peer_factory: PeerFactory) -> None:
    good = peer_factory("plain").server("good")
    bad = server_spec(free_port(), "plain", "bad", primary=False)
    put_servers(store, good, bad)
    asyncio.run(monitor_for(store, store_url).probe_once())
    assert health(store, bad).state == rec.UNREACHABLE
    result = CliRunner().invoke(cli, ["drift", str(tmp_path), "--store", store_url])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("no drift")


async def test_run_checks_until_stopped(store: SqlStore, store_url: str,
                                        peer_factory: PeerFactory) -> None:
    server = peer_factory("plain").server()
    put_servers(store, server)
    monitor = monitor_for(store, store_url)
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(stop))
    for _ in range(3000):  # wait for two cycles' worth of records, not for a time
        found = rec.read(await asyncio.to_thread(store.status_get, key_of(server)))
        if found is not None and found.last_checked > found.last_change:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 30)
    assert found is not None and found.reachable


# -- X4: one leader on a shared PostgreSQL --------------------------------------------


async def test_only_one_daemon_leads_on_a_shared_postgres(
    postgres_url: str, peer_factory: PeerFactory, smtp_sink: SmtpSink
) -> None:
    peer = peer_factory("plain")
    server = server_spec(smtp_sink.port, "plain", "relay", alternateHost=HOST,
                         alternatePort=peer.port)
    with open_store(postgres_url) as a_store, open_store(postgres_url) as b_store:
        put_servers(a_store, server)
        a_selector, b_selector = HostSelector(), HostSelector()
        a = monitor_for(a_store, postgres_url, selector=a_selector, worker="a")
        b = monitor_for(b_store, postgres_url, selector=b_selector, worker="b")
        try:
            first = await a.probe_once()
            second = await b.probe_once()
            assert (first.leader, second.leader) == (True, False)
            assert peer.connections == 1  # only the leader probed the alternate
            assert health(b_store, server).checked_by == "a"

            smtp_sink.stop()
            await a.probe_once()
            assert a_selector.is_down(HOST, smtp_sink.port)
            await b.probe_once()  # the follower applies the leader's findings
            assert b_selector.is_down(HOST, smtp_sink.port)
            assert up(b, server) == 1.0  # Reachable via the alternate
            assert peer.connections == 2

            await a.aclose()  # the leader stops: its session, and the lock, go away
            taken = await b.probe_once()
            assert taken.leader and health(b_store, server).checked_by == "b"
            assert (await a.probe_once()).leader is False
            smtp_sink.start()
            await b.probe_once()
            await a.probe_once()
            assert not a_selector.is_down(HOST, smtp_sink.port)
            assert not b_selector.is_down(HOST, smtp_sink.port)
        finally:
            await a.aclose()
            await b.aclose()


async def test_a_leader_whose_session_dies_hands_over(
    postgres_url: str, peer_factory: PeerFactory
) -> None:
    server = peer_factory("plain").server()
    with open_store(postgres_url) as a_store, open_store(postgres_url) as b_store:
        put_servers(a_store, server)
        a = monitor_for(a_store, postgres_url, worker="a")
        b = monitor_for(b_store, postgres_url, worker="b")
        try:
            assert (await a.probe_once()).leader and not (await b.probe_once()).leader
            # Only the session holding *this* store's lock: the server is shared.
            key = lock_key(LEADER_ROLE, a_store.lineage) & 0xFFFFFFFFFFFFFFFF
            with psycopg.connect(postgres_url, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = "
                    "'advisory' AND granted AND classid = %s AND objid = %s AND objsubid = 1",
                    (key >> 32, key & 0xFFFFFFFF)).fetchall()
            assert killed == [(True,)]
            assert (await b.probe_once()).leader  # the lock died with the session
            assert not (await a.probe_once()).leader  # a notices and follows
            assert health(b_store, server).checked_by == "b"
        finally:
            await a.aclose()
            await b.aclose()


async def test_sqlite_always_leads(tmp_path: Path, peer_factory: PeerFactory) -> None:
    url = str(tmp_path / "state.db")
    server = peer_factory("plain").server()
    with open_store(url) as store:
        put_servers(store, server)
        a, b = monitor_for(store, url), monitor_for(store, url)
        assert (await a.probe_once()).leader and (await b.probe_once()).leader
